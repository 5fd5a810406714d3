//! The recordings bucket: versioning, default encryption, public access blocked, a lifecycle
//! rule expiring recordings after `retention_days`, and an IAM user limited to the bucket
//! whose access key Vault uses.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};
use kdeploy_provider::{ErrorKind, ProviderError, Value};

use crate::clients::{Shared, s3_endpoint_host};
use crate::plan::user_name;
use crate::policy;
use crate::util::{Attrs, TAG_COMPONENT, TAG_MANAGED_BY, b, is_code, live_tags, n, s, sdk_err, tag_map};

const RULE_ID: &str = "kdeploy-retention";
const POLICY_NAME: &str = "kdeploy-recordings-bucket";

fn build_err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::other(format!("building an S3 request: {e}"))
}

/// Every bucket name of the account (one ListBuckets).
pub async fn list_buckets(s3: &aws_sdk_s3::Client) -> Result<HashSet<String>, ProviderError> {
    let mut out = HashSet::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3.list_buckets().set_continuation_token(token.take()).send().await.map_err(|e| sdk_err("listing S3 buckets", e))?;
        out.extend(page.buckets().iter().filter_map(|b| b.name().map(str::to_string)));
        match page.continuation_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The versioning status of a bucket; None when it was never versioned. moto (5.x) names the
/// response's root element `GetBucketVersioningResponse` instead of `VersioningConfiguration`,
/// which the SDK refuses to parse: read the status from the raw body then.
async fn versioning_status(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Option<BucketVersioningStatus>, ProviderError> {
    match s3.get_bucket_versioning().bucket(bucket).send().await {
        Ok(o) => Ok(o.status().cloned()),
        Err(e) if format!("{e:?}").contains("GetBucketVersioningResponse") => {
            let raw = format!("{e:?}");
            Ok(if raw.contains("<Status>Enabled</Status>") {
                Some(BucketVersioningStatus::Enabled)
            } else if raw.contains("<Status>Suspended</Status>") {
                Some(BucketVersioningStatus::Suspended)
            } else {
                None
            })
        }
        Err(e) => Err(sdk_err(format!("reading the versioning of bucket {bucket}"), e)),
    }
}

/// The live attributes of an existing bucket, in the shape of `recorded`.
pub async fn read_bucket(shared: &Shared, region: &str, bucket: &str, recorded: &Attrs) -> Result<Attrs, ProviderError> {
    let s3 = shared.s3(region).await;
    let iam = shared.iam(region).await;
    let mut m = recorded.clone();
    let v = versioning_status(&s3, bucket).await?;
    m.insert("versioning".into(), Value::Bool(matches!(v, Some(BucketVersioningStatus::Enabled))));
    let days = match s3.get_bucket_lifecycle_configuration().bucket(bucket).send().await {
        Ok(o) => {
            o.rules().iter().find(|r| r.id() == Some(RULE_ID) && r.status() == &ExpirationStatus::Enabled).and_then(|r| r.expiration()).and_then(|e| e.days())
        }
        Err(e) if is_code(&e, &["NoSuchLifecycleConfiguration"]) => None,
        Err(e) => return Err(sdk_err(format!("reading the lifecycle rules of bucket {bucket}"), e)),
    };
    m.insert("retention_days".into(), days.map(|d| Value::from_i64(d.into())).unwrap_or_default());
    let tags = match s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(o) => o.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
        Err(e) if is_code(&e, &["NoSuchTagSet", "NoSuchTagSetError"]) => Vec::new(),
        Err(e) => return Err(sdk_err(format!("reading the tags of bucket {bucket}"), e)),
    };
    m.insert("tags".into(), live_tags(tags, recorded.get("tags")));
    m.insert("endpoint".into(), Value::String(s3_endpoint_host(region)));
    // The Vault user's key: still there, or gone (then apply makes a new one).
    let user = user_name(bucket);
    let keys = match iam.list_access_keys().user_name(&user).send().await {
        Ok(o) => o.access_key_metadata().iter().filter_map(|k| k.access_key_id().map(str::to_string)).collect::<Vec<_>>(),
        Err(e) if is_code(&e, &["NoSuchEntity"]) => Vec::new(),
        Err(e) => return Err(sdk_err(format!("listing the access keys of IAM user {user}"), e)),
    };
    let policy_ok = match iam.get_user_policy().user_name(&user).policy_name(POLICY_NAME).send().await {
        Ok(_) => true,
        Err(e) if is_code(&e, &["NoSuchEntity"]) => false,
        Err(e) => return Err(sdk_err(format!("reading the policy of IAM user {user}"), e)),
    };
    let key_ok = s(recorded, "access_key").is_some_and(|k| keys.contains(&k));
    m.insert("iam_user".into(), if policy_ok || !keys.is_empty() { Value::String(user) } else { Value::Null });
    if !key_ok {
        m.insert("access_key".into(), Value::Null);
        m.insert("secret_key".into(), Value::Null);
    }
    Ok(m)
}

/// Creates or converges the bucket, the user, its policy and key; returns the attributes.
pub async fn apply(shared: &Shared, address: &str, planned: &Attrs) -> Result<Attrs, ProviderError> {
    let bucket = s(planned, "bucket").ok_or_else(|| ProviderError::new(ErrorKind::Invalid, format!("{address}: bucket is required")))?;
    let region = shared.region(s(planned, "bucket_region").or_else(|| s(planned, "region")), address).await?;
    let s3 = shared.s3(&region).await;
    let iam = shared.iam(&region).await;

    // The bucket.
    if !list_buckets(&s3).await?.contains(&bucket) {
        let mut req = s3.create_bucket().bucket(&bucket);
        if region != "us-east-1" {
            req = req
                .create_bucket_configuration(CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region.as_str())).build());
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["BucketAlreadyOwnedByYou"]) => {}
            Err(e) if is_code(&e, &["BucketAlreadyExists"]) => {
                return Err(ProviderError::new(
                    ErrorKind::Conflict,
                    format!("{address}: the bucket name {bucket:?} is taken by another AWS account (bucket names are global); choose another `bucket`"),
                ));
            }
            Err(e) => return Err(sdk_err(format!("creating bucket {bucket}"), e)),
        }
    }
    s3.put_public_access_block()
        .bucket(&bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk_err(format!("blocking public access to bucket {bucket}"), e))?;
    let sse = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256).build().map_err(build_err)?,
                )
                .build(),
        )
        .build()
        .map_err(build_err)?;
    s3.put_bucket_encryption()
        .bucket(&bucket)
        .server_side_encryption_configuration(sse)
        .send()
        .await
        .map_err(|e| sdk_err(format!("setting default encryption on bucket {bucket}"), e))?;
    let versioning = b(planned, "versioning").unwrap_or(false);
    let live_versioning = versioning_status(&s3, &bucket).await?;
    let status = match (versioning, live_versioning.as_ref()) {
        (true, Some(BucketVersioningStatus::Enabled)) | (false, None) | (false, Some(BucketVersioningStatus::Suspended)) => None,
        (true, _) => Some(BucketVersioningStatus::Enabled),
        (false, _) => Some(BucketVersioningStatus::Suspended),
    };
    if let Some(status) = status {
        s3.put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(VersioningConfiguration::builder().status(status).build())
            .send()
            .await
            .map_err(|e| sdk_err(format!("setting versioning on bucket {bucket}"), e))?;
    }
    match n(planned, "retention_days") {
        Some(days) => {
            let mut rule = LifecycleRule::builder()
                .id(RULE_ID)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .expiration(LifecycleExpiration::builder().days(days as i32).build());
            if versioning {
                rule = rule.noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(days as i32).build());
            }
            let config = BucketLifecycleConfiguration::builder().rules(rule.build().map_err(build_err)?).build().map_err(build_err)?;
            s3.put_bucket_lifecycle_configuration()
                .bucket(&bucket)
                .lifecycle_configuration(config)
                .send()
                .await
                .map_err(|e| sdk_err(format!("setting the retention rule on bucket {bucket}"), e))?;
        }
        None => {
            s3.delete_bucket_lifecycle().bucket(&bucket).send().await.map_err(|e| sdk_err(format!("removing the retention rule of bucket {bucket}"), e))?;
        }
    }
    let mut tags = tag_map(planned, "tags");
    tags.insert(TAG_MANAGED_BY.into(), "kdeploy".into());
    tags.insert(TAG_COMPONENT.into(), address.into());
    let mut tagging = Tagging::builder();
    for (k, v) in &tags {
        tagging = tagging.tag_set(Tag::builder().key(k).value(v).build().map_err(build_err)?);
    }
    s3.put_bucket_tagging()
        .bucket(&bucket)
        .tagging(tagging.build().map_err(build_err)?)
        .send()
        .await
        .map_err(|e| sdk_err(format!("tagging bucket {bucket}"), e))?;

    // The Vault user, limited to this bucket.
    let user = user_name(&bucket);
    match iam.get_user().user_name(&user).send().await {
        Ok(_) => {}
        Err(e) if is_code(&e, &["NoSuchEntity"]) => {
            let mut req = iam.create_user().user_name(&user);
            for (k, v) in &tags {
                req = req.tags(aws_sdk_iam::types::Tag::builder().key(k).value(v).build().map_err(build_err)?);
            }
            req.send().await.map_err(|e| sdk_err(format!("creating IAM user {user}"), e))?;
        }
        Err(e) => return Err(sdk_err(format!("reading IAM user {user}"), e)),
    }
    iam.put_user_policy()
        .user_name(&user)
        .policy_name(POLICY_NAME)
        .policy_document(policy::bucket_access(&region, &bucket).to_string())
        .send()
        .await
        .map_err(|e| sdk_err(format!("writing the bucket policy of IAM user {user}"), e))?;
    let keys = iam.list_access_keys().user_name(&user).send().await.map_err(|e| sdk_err(format!("listing the access keys of IAM user {user}"), e))?;
    let keys: Vec<String> = keys.access_key_metadata().iter().filter_map(|k| k.access_key_id().map(str::to_string)).collect();
    let kept = match (s(planned, "access_key"), s(planned, "secret_key")) {
        (Some(a), Some(sk)) if keys.contains(&a) => Some((a, sk)),
        _ => None,
    };
    let (access, secret) = match kept {
        Some(k) => k,
        None => {
            // Keys kdeploy no longer knows the secret of are useless to Vault: replace them.
            for k in &keys {
                iam.delete_access_key()
                    .user_name(&user)
                    .access_key_id(k)
                    .send()
                    .await
                    .map_err(|e| sdk_err(format!("deleting an old access key of IAM user {user}"), e))?;
            }
            let k = iam.create_access_key().user_name(&user).send().await.map_err(|e| sdk_err(format!("creating an access key for IAM user {user}"), e))?;
            let k = k.access_key().ok_or_else(|| ProviderError::other(format!("IAM returned no access key for {user}")))?;
            (k.access_key_id().to_string(), k.secret_access_key().to_string())
        }
    };

    let mut out = planned.clone();
    out.insert("bucket_region".into(), Value::String(region.clone()));
    out.insert("endpoint".into(), Value::String(s3_endpoint_host(&region)));
    out.insert("arn".into(), Value::String(policy::bucket_arn(&region, &bucket)));
    out.insert("iam_user".into(), Value::String(user));
    out.insert("access_key".into(), Value::String(access));
    out.insert("secret_key".into(), Value::String(secret));
    Ok(out)
}

/// Deletes the bucket (refusing when it holds objects unless `delete_data`), then the user.
pub async fn delete(shared: &Shared, address: &str, prior: &Attrs, delete_data: bool) -> Result<(), ProviderError> {
    let Some(bucket) = s(prior, "bucket") else { return Ok(()) };
    let region = shared.region(s(prior, "bucket_region").or_else(|| s(prior, "region")), address).await?;
    let s3 = shared.s3(&region).await;
    let iam = shared.iam(&region).await;
    if list_buckets(&s3).await?.contains(&bucket) {
        let objects = all_versions(&s3, &bucket, !delete_data).await?;
        if !objects.is_empty() && !delete_data {
            return Err(ProviderError::new(
                ErrorKind::Conflict,
                format!(
                    "{address}: bucket {bucket} still holds recordings; kdeploy does not delete data unless asked. Run `kdeploy destroy --delete-data` to delete the bucket with its contents, or empty or keep it yourself (`kdeploy state rm {address}`)"
                ),
            ));
        }
        for chunk in objects.chunks(1000) {
            let ids: Vec<ObjectIdentifier> =
                chunk.iter().map(|(k, v)| ObjectIdentifier::builder().key(k).set_version_id(v.clone()).build()).collect::<Result<_, _>>().map_err(build_err)?;
            let out = s3
                .delete_objects()
                .bucket(&bucket)
                .delete(Delete::builder().set_objects(Some(ids)).quiet(true).build().map_err(build_err)?)
                .send()
                .await
                .map_err(|e| sdk_err(format!("deleting the objects of bucket {bucket}"), e))?;
            if let Some(err) = out.errors().first() {
                return Err(ProviderError::other(format!(
                    "deleting the objects of bucket {bucket}: {} {}",
                    err.code().unwrap_or_default(),
                    err.message().unwrap_or_default()
                )));
            }
        }
        match s3.delete_bucket().bucket(&bucket).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["NoSuchBucket"]) => {}
            Err(e) => return Err(sdk_err(format!("deleting bucket {bucket}"), e)),
        }
    }
    let user = user_name(&bucket);
    if let Ok(o) = iam.list_access_keys().user_name(&user).send().await {
        for k in o.access_key_metadata().iter().filter_map(|k| k.access_key_id()) {
            iam.delete_access_key()
                .user_name(&user)
                .access_key_id(k)
                .send()
                .await
                .map_err(|e| sdk_err(format!("deleting an access key of IAM user {user}"), e))?;
        }
    }
    match iam.delete_user_policy().user_name(&user).policy_name(POLICY_NAME).send().await {
        Ok(_) => {}
        Err(e) if is_code(&e, &["NoSuchEntity"]) => {}
        Err(e) => return Err(sdk_err(format!("deleting the policy of IAM user {user}"), e)),
    }
    match iam.delete_user().user_name(&user).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &["NoSuchEntity"]) => Ok(()),
        Err(e) => Err(sdk_err(format!("deleting IAM user {user}"), e)),
    }
}

/// Every object version and delete marker (key, version id); only the first when `first_only`.
async fn all_versions(s3: &aws_sdk_s3::Client, bucket: &str, first_only: bool) -> Result<Vec<(String, Option<String>)>, ProviderError> {
    let mut out = Vec::new();
    let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| sdk_err(format!("listing the objects of bucket {bucket}"), e))?;
        for v in page.versions() {
            if let Some(k) = v.key() {
                out.push((k.to_string(), v.version_id().filter(|v| *v != "null").map(str::to_string)));
            }
        }
        for d in page.delete_markers() {
            if let Some(k) = d.key() {
                out.push((k.to_string(), d.version_id().filter(|v| *v != "null").map(str::to_string)));
            }
        }
        if (first_only && !out.is_empty()) || page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    // Unversioned listings can miss objects on some S3 implementations: add plain keys.
    if out.is_empty() {
        let page = s3.list_objects_v2().bucket(bucket).send().await.map_err(|e| sdk_err(format!("listing the objects of bucket {bucket}"), e))?;
        out.extend(page.contents().iter().filter_map(|o| o.key().map(|k| (k.to_string(), None))));
        if !first_only && page.is_truncated() == Some(true) {
            let mut token = page.next_continuation_token().map(str::to_string);
            while let Some(t) = token.take() {
                let page = s3
                    .list_objects_v2()
                    .bucket(bucket)
                    .continuation_token(t)
                    .send()
                    .await
                    .map_err(|e| sdk_err(format!("listing the objects of bucket {bucket}"), e))?;
                out.extend(page.contents().iter().filter_map(|o| o.key().map(|k| (k.to_string(), None))));
                if page.is_truncated() == Some(true) {
                    token = page.next_continuation_token().map(str::to_string);
                }
            }
        }
    }
    Ok(out)
}

/// Buckets by name → index of the request (for the batched read).
pub type BucketRequests = BTreeMap<String, Vec<usize>>;
