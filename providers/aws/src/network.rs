//! The VPC kdeploy creates for a cluster when no subnets are given: public subnets in two
//! availability zones behind an internet gateway (no NAT gateway, so nothing is billed by
//! the hour for the network itself). Everything is tagged `kdeploy:cluster = <name>`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Tag, TagSpecification};
use kdeploy_provider::{ErrorKind, ProviderError};

use crate::util::{is_code, sdk_err, wait_for};

pub const TAG_CLUSTER: &str = "kdeploy:cluster";
const SUBNETS: usize = 2;
/// Errors meaning "something still uses it, try again later".
const BUSY: &[&str] = &["DependencyViolation", "InvalidGroup.InUse"];

/// `count` subnet CIDRs carved from a VPC CIDR, each 4 bits longer than the VPC's prefix
/// (at most /28): 10.20.0.0/16 → 10.20.0.0/20, 10.20.16.0/20.
pub fn subnet_cidrs(vpc_cidr: &str, count: usize) -> Result<Vec<String>, String> {
    let bad = || format!("vpc_cidr {vpc_cidr:?} is not an IPv4 CIDR between /16 and /24, e.g. \"10.20.0.0/16\"");
    let (ip, prefix) = vpc_cidr.split_once('/').ok_or_else(bad)?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    let octets: Vec<u32> = ip.split('.').map(|o| o.parse::<u8>().map(u32::from)).collect::<Result<_, _>>().map_err(|_| bad())?;
    if octets.len() != 4 || !(16..=24).contains(&prefix) {
        return Err(bad());
    }
    let base = (octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]) & (u32::MAX << (32 - prefix));
    let sub = (prefix + 4).min(28);
    let size = 1u32 << (32 - sub);
    Ok((0..count as u32)
        .map(|i| {
            let a = base + i * size;
            format!("{}.{}.{}.{}/{sub}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)
        })
        .collect())
}

fn tag_spec(kind: ResourceType, name: &str, tags: &BTreeMap<String, String>, extra: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(kind);
    for (k, v) in tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([(TAG_CLUSTER, name), ("Name", &format!("kdeploy-{name}") as &str)])
        .chain(extra.iter().copied())
    {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    spec.build()
}

fn by_tag(name: &str) -> Filter {
    Filter::builder().name(format!("tag:{TAG_CLUSTER}")).values(name).build()
}

fn by_vpc(key: &str, vpc: &str) -> Filter {
    Filter::builder().name(key).values(vpc).build()
}

/// Finds (or creates) the cluster's VPC and returns its id and subnet ids.
pub async fn ensure_vpc(ec2: &aws_sdk_ec2::Client, name: &str, cidr: &str, tags: &BTreeMap<String, String>) -> Result<(String, Vec<String>), ProviderError> {
    let cidrs = subnet_cidrs(cidr, SUBNETS).map_err(|e| ProviderError::new(ErrorKind::Invalid, e))?;
    let found = ec2.describe_vpcs().filters(by_tag(name)).send().await.map_err(|e| sdk_err(format!("looking for the VPC of cluster {name}"), e))?;
    let vpc_id = match found.vpcs().iter().find_map(|v| v.vpc_id()) {
        Some(id) => id.to_string(),
        None => {
            let vpc = ec2
                .create_vpc()
                .cidr_block(cidr)
                .tag_specifications(tag_spec(ResourceType::Vpc, name, tags, &[]))
                .send()
                .await
                .map_err(|e| sdk_err(format!("creating a VPC ({cidr}) for cluster {name}"), e))?;
            let id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string();
            let on = || AttributeBooleanValue::builder().value(true).build();
            ec2.modify_vpc_attribute().vpc_id(&id).enable_dns_support(on()).send().await.map_err(|e| sdk_err("enabling DNS support on the VPC", e))?;
            ec2.modify_vpc_attribute().vpc_id(&id).enable_dns_hostnames(on()).send().await.map_err(|e| sdk_err("enabling DNS host names on the VPC", e))?;
            let igw = ec2
                .create_internet_gateway()
                .tag_specifications(tag_spec(ResourceType::InternetGateway, name, tags, &[]))
                .send()
                .await
                .map_err(|e| sdk_err("creating an internet gateway", e))?;
            let igw_id = igw.internet_gateway().and_then(|g| g.internet_gateway_id()).unwrap_or_default().to_string();
            ec2.attach_internet_gateway().internet_gateway_id(&igw_id).vpc_id(&id).send().await.map_err(|e| sdk_err("attaching the internet gateway", e))?;
            let rt = ec2
                .create_route_table()
                .vpc_id(&id)
                .tag_specifications(tag_spec(ResourceType::RouteTable, name, tags, &[]))
                .send()
                .await
                .map_err(|e| sdk_err("creating a route table", e))?;
            let rt_id = rt.route_table().and_then(|r| r.route_table_id()).unwrap_or_default().to_string();
            ec2.create_route()
                .route_table_id(&rt_id)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(&igw_id)
                .send()
                .await
                .map_err(|e| sdk_err("adding the default route", e))?;
            id
        }
    };
    // Subnets: reuse the ones there, create the missing ones (an interrupted create resumes).
    let existing = ec2.describe_subnets().filters(by_vpc("vpc-id", &vpc_id)).send().await.map_err(|e| sdk_err("listing the VPC's subnets", e))?;
    let mut subnets: Vec<(String, String)> =
        existing.subnets().iter().filter_map(|s| Some((s.subnet_id()?.to_string(), s.cidr_block()?.to_string()))).collect();
    if subnets.len() < SUBNETS {
        let zones = ec2.describe_availability_zones().send().await.map_err(|e| sdk_err("listing availability zones", e))?;
        let zones: Vec<String> = zones.availability_zones().iter().filter_map(|z| z.zone_name().map(str::to_string)).collect();
        if zones.len() < SUBNETS {
            return Err(ProviderError::new(ErrorKind::Invalid, format!("EKS needs subnets in two availability zones, but the region has {}", zones.len())));
        }
        let tables = ec2
            .describe_route_tables()
            .filters(by_vpc("vpc-id", &vpc_id))
            .filters(by_tag(name))
            .send()
            .await
            .map_err(|e| sdk_err("listing route tables", e))?;
        let rt_id = tables.route_tables().iter().find_map(|t| t.route_table_id()).map(str::to_string);
        for (i, c) in cidrs.iter().enumerate() {
            if subnets.iter().any(|(_, have)| have == c) {
                continue;
            }
            let sn = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(c)
                .availability_zone(&zones[i % zones.len()])
                .tag_specifications(tag_spec(ResourceType::Subnet, name, tags, &[("kubernetes.io/role/elb", "1")]))
                .send()
                .await
                .map_err(|e| sdk_err(format!("creating subnet {c}"), e))?;
            let id = sn.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string();
            ec2.modify_subnet_attribute()
                .subnet_id(&id)
                .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(|e| sdk_err("enabling public IPs on the subnet", e))?;
            if let Some(rt) = &rt_id {
                ec2.associate_route_table().route_table_id(rt).subnet_id(&id).send().await.map_err(|e| sdk_err("associating the route table", e))?;
            }
            subnets.push((id, c.clone()));
        }
    }
    Ok((vpc_id, subnets.into_iter().map(|(id, _)| id).collect()))
}

/// Deletes the VPCs tagged for the cluster with everything in them. Network interfaces left by
/// the cluster take a few minutes to go away after it is deleted: dependency errors are retried.
pub async fn delete_vpcs(ec2: &aws_sdk_ec2::Client, name: &str) -> Result<(), ProviderError> {
    let found = ec2.describe_vpcs().filters(by_tag(name)).send().await.map_err(|e| sdk_err(format!("looking for the VPC of cluster {name}"), e))?;
    for vpc in found.vpcs().iter().filter_map(|v| v.vpc_id()) {
        let vpc = vpc.to_string();
        wait_for(&format!("deleting VPC {vpc} of cluster {name}"), Duration::from_secs(15 * 60), || async { delete_vpc_once(ec2, &vpc).await }).await?;
    }
    Ok(())
}

/// One attempt: Some(()) when the VPC is gone, None when something still depends on it.
async fn delete_vpc_once(ec2: &aws_sdk_ec2::Client, vpc: &str) -> Result<Option<()>, ProviderError> {
    let subnets = ec2.describe_subnets().filters(by_vpc("vpc-id", vpc)).send().await.map_err(|e| sdk_err("listing subnets", e))?;
    for id in subnets.subnets().iter().filter_map(|s| s.subnet_id()) {
        match ec2.delete_subnet().subnet_id(id).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, BUSY) => return Ok(None),
            Err(e) if is_code(&e, &["InvalidSubnetID.NotFound"]) => {}
            Err(e) => return Err(sdk_err(format!("deleting subnet {id}"), e)),
        }
    }
    let tables = ec2.describe_route_tables().filters(by_vpc("vpc-id", vpc)).send().await.map_err(|e| sdk_err("listing route tables", e))?;
    for t in tables.route_tables() {
        if t.associations().iter().any(|a| a.main() == Some(true)) {
            continue;
        }
        for a in t.associations().iter().filter_map(|a| a.route_table_association_id()) {
            let _ = ec2.disassociate_route_table().association_id(a).send().await;
        }
        if let Some(id) = t.route_table_id() {
            match ec2.delete_route_table().route_table_id(id).send().await {
                Ok(_) => {}
                Err(e) if is_code(&e, BUSY) => return Ok(None),
                Err(e) if is_code(&e, &["InvalidRouteTableID.NotFound"]) => {}
                Err(e) => return Err(sdk_err(format!("deleting route table {id}"), e)),
            }
        }
    }
    let igws = ec2.describe_internet_gateways().filters(by_vpc("attachment.vpc-id", vpc)).send().await.map_err(|e| sdk_err("listing internet gateways", e))?;
    for id in igws.internet_gateways().iter().filter_map(|g| g.internet_gateway_id()) {
        let _ = ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc).send().await;
        match ec2.delete_internet_gateway().internet_gateway_id(id).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, BUSY) => return Ok(None),
            Err(e) => return Err(sdk_err(format!("deleting internet gateway {id}"), e)),
        }
    }
    // Security groups EKS or load balancers left behind (the default group goes with the VPC).
    let groups = ec2.describe_security_groups().filters(by_vpc("vpc-id", vpc)).send().await.map_err(|e| sdk_err("listing security groups", e))?;
    for g in groups.security_groups().iter().filter(|g| g.group_name() != Some("default")) {
        if let Some(id) = g.group_id() {
            match ec2.delete_security_group().group_id(id).send().await {
                Ok(_) => {}
                Err(e) if is_code(&e, BUSY) => return Ok(None),
                Err(e) if is_code(&e, &["InvalidGroup.NotFound"]) => {}
                Err(e) => return Err(sdk_err(format!("deleting security group {id}"), e)),
            }
        }
    }
    match ec2.delete_vpc().vpc_id(vpc).send().await {
        Ok(_) => Ok(Some(())),
        Err(e) if is_code(&e, BUSY) => Ok(None),
        Err(e) if is_code(&e, &["InvalidVpcID.NotFound"]) => Ok(Some(())),
        Err(e) => Err(sdk_err(format!("deleting VPC {vpc}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_carved_from_the_vpc() {
        assert_eq!(subnet_cidrs("10.20.0.0/16", 2).unwrap(), vec!["10.20.0.0/20", "10.20.16.0/20"]);
        assert_eq!(subnet_cidrs("192.168.4.0/22", 2).unwrap(), vec!["192.168.4.0/26", "192.168.4.64/26"]);
        assert_eq!(subnet_cidrs("10.0.0.0/24", 2).unwrap(), vec!["10.0.0.0/28", "10.0.0.16/28"]);
        assert!(subnet_cidrs("10.0.0.0/8", 2).is_err());
        assert!(subnet_cidrs("nope", 2).is_err());
    }
}
