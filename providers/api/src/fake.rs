//! A fake provider for the engine's tests (feature `testing`): an in-memory "live world" that
//! records every call with its start and end, can be told to fail or to be slow for chosen
//! addresses, to wait for readiness after writing (apart from the write, as the Kubernetes
//! provider does), and can be mutated out of band to simulate drift. It is never registered by
//! the real CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::provider::*;
use crate::schema::schema;
use crate::value::Value;

/// One recorded provider call.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: &'static str,
    pub address: String,
    pub start: Instant,
    pub end: Instant,
}

#[derive(Default)]
struct World {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    read_batches: Vec<usize>,
    running: usize,
    max_running: usize,
    fail: BTreeMap<String, String>,
    delay: BTreeMap<String, Duration>,
    default_delay: Duration,
    /// Addresses that wait for readiness after their write, and how long.
    ready_after: BTreeMap<String, Duration>,
    /// Writes of addresses with this prefix wait until this many of them were written.
    ready_together: Option<(String, usize)>,
    waiting: usize,
    max_waiting: usize,
    generated: u64,
    preflight_errors: Vec<String>,
}

/// The shared fake live world. Clone it freely; every clone sees the same objects.
#[derive(Clone, Default)]
pub struct FakeWorld(Arc<Mutex<World>>);

impl FakeWorld {
    pub fn new() -> FakeWorld {
        FakeWorld::default()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A provider with the given name backed by this world.
    pub fn provider(&self, name: &str) -> Arc<dyn Provider> {
        Arc::new(FakeProvider { name: name.to_string(), world: self.clone() })
    }

    /// Live objects by address.
    pub fn objects(&self) -> BTreeMap<String, Value> {
        self.lock().objects.clone()
    }

    pub fn object(&self, address: &str) -> Option<Value> {
        self.lock().objects.get(address).cloned()
    }

    /// Every mutating call so far (and every wait for readiness, op "wait"), in the order they
    /// ended.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The sizes of the read batches the engine sent.
    pub fn read_batches(&self) -> Vec<usize> {
        self.lock().read_batches.clone()
    }

    /// The most mutating calls that ran at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.lock().max_running
    }

    pub fn clear_calls(&self) {
        let mut w = self.lock();
        w.calls.clear();
        w.read_batches.clear();
        w.max_running = 0;
        w.max_waiting = 0;
    }

    /// Makes apply/delete of `address` fail with `message`.
    pub fn fail(&self, address: &str, message: &str) {
        self.lock().fail.insert(address.to_string(), message.to_string());
    }

    pub fn heal(&self, address: &str) {
        self.lock().fail.remove(address);
    }

    /// Makes every mutating call on `address` take `delay`.
    pub fn delay(&self, address: &str, delay: Duration) {
        self.lock().delay.insert(address.to_string(), delay);
    }

    pub fn default_delay(&self, delay: Duration) {
        self.lock().default_delay = delay;
    }

    /// Makes `address` wait `delay` for readiness after its write, in [`Provider::wait`].
    pub fn ready_after(&self, address: &str, delay: Duration) {
        self.lock().ready_after.insert(address.to_string(), delay);
    }

    /// Makes every write of an address starting with `prefix` wait for readiness until `count`
    /// of them were written: a barrier that only ends if waits do not hold the slots writes
    /// need. A wait that has not ended after 20 s fails with a timeout.
    pub fn ready_together(&self, prefix: &str, count: usize) {
        self.lock().ready_together = Some((prefix.to_string(), count));
    }

    /// The most waits for readiness that ran at the same time.
    pub fn max_waiting(&self) -> usize {
        self.lock().max_waiting
    }

    /// Out of band: changes one attribute of a live object.
    pub fn set_attr(&self, address: &str, attr: &str, value: Value) {
        if let Some(Value::Map(m)) = self.lock().objects.get_mut(address) {
            m.insert(attr.to_string(), value);
        }
    }

    /// Out of band: an object kdeploy did not create (what a data source reads).
    pub fn put(&self, address: &str, value: Value) {
        self.lock().objects.insert(address.to_string(), value);
    }

    /// Out of band: deletes a live object.
    pub fn remove(&self, address: &str) {
        self.lock().objects.remove(address);
    }

    /// Makes preflight report an error (an unreachable target, a missing add-on).
    pub fn preflight_error(&self, message: &str) {
        self.lock().preflight_errors.push(message.to_string());
    }
}

struct FakeProvider {
    name: String,
    world: FakeWorld,
}

impl FakeProvider {
    async fn run<T>(&self, op: &'static str, address: &str, body: impl FnOnce(&mut World) -> Result<T, ProviderError>) -> Result<T, ProviderError> {
        let (delay, start) = {
            let mut w = self.world.lock();
            w.running += 1;
            w.max_running = w.max_running.max(w.running);
            let delay = w.delay.get(address).copied().unwrap_or(w.default_delay);
            (delay, Instant::now())
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut w = self.world.lock();
        w.running -= 1;
        w.calls.push(Call { op, address: address.to_string(), start, end: Instant::now() });
        if let Some(message) = w.fail.get(address) {
            return Err(ProviderError::new(ErrorKind::Invalid, message.clone()));
        }
        body(&mut w)
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn preflight(&self, _clusters: &[(ComponentRef, Value)]) -> Preflight {
        Preflight { errors: self.world.lock().preflight_errors.clone(), warnings: Vec::new() }
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        let mut w = self.world.lock();
        w.read_batches.push(requests.len());
        Ok(requests
            .iter()
            .map(|r| match w.objects.get(&r.component.address.to_string()) {
                Some(v) => ReadResult::Found { attributes: v.clone(), fingerprint: None },
                None => ReadResult::Missing,
            })
            .collect())
    }

    /// The object [`FakeWorld::put`] put at the data source's address, over its arguments.
    async fn read_data(&self, request: DataRequest<'_>) -> Result<DataResult, ProviderError> {
        let address = request.source.address.to_string();
        let args = request.args.as_map().cloned().unwrap_or_default();
        self.run("read_data", &address, |w| {
            Ok(match w.objects.get(&address).and_then(Value::as_map) {
                Some(found) => DataResult::Found(Value::Map(args.into_iter().chain(found.clone()).collect())),
                None => DataResult::Missing(format!("object {address}")),
            })
        })
        .await
    }

    async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        let address = request.component.address.to_string();
        self.run("apply", &address, |w| {
            let schema =
                schema(request.component.kind, &request.component.type_name).ok_or_else(|| ProviderError::other("fake provider: unknown component type"))?;
            let mut attrs = match request.planned {
                Value::Map(m) => m,
                _ => return Err(ProviderError::new(ErrorKind::Invalid, "planned value is not a map")),
            };
            let computed: BTreeSet<&str> = schema.computed().map(|a| a.name).collect();
            for (name, value) in attrs.iter_mut() {
                if value.contains_unknown() {
                    if !computed.contains(name.as_str()) {
                        return Err(ProviderError::new(ErrorKind::Invalid, format!("input {name} of {address} is still unknown at apply")));
                    }
                    w.generated += 1;
                    *value = if name == "endpoint" || name == "url" {
                        Value::String(format!("fake://{address}"))
                    } else if name == "port" {
                        Value::from_i64(1000 + w.generated as i64)
                    } else {
                        Value::String(format!("gen-{}-{}", name, w.generated))
                    };
                }
            }
            let attributes = Value::Map(attrs);
            w.objects.insert(address.clone(), attributes.clone());
            let waits = w.ready_after.contains_key(&address) || w.ready_together.as_ref().is_some_and(|(p, _)| address.starts_with(p.as_str()));
            let wait = waits.then(|| Wait(serde_json::Value::String(address.clone())));
            Ok(ApplyResponse { attributes, fingerprint: None, wait })
        })
        .await
    }

    async fn wait(&self, request: WaitRequest) -> Result<(), ProviderError> {
        let address = request.component.address.to_string();
        let start = Instant::now();
        let (delay, together) = {
            let mut w = self.world.lock();
            w.waiting += 1;
            w.max_waiting = w.max_waiting.max(w.waiting);
            (w.ready_after.get(&address).copied().unwrap_or_default(), w.ready_together.clone().filter(|(p, _)| address.starts_with(p.as_str())))
        };
        tokio::time::sleep(delay).await;
        let mut result = Ok(());
        if let Some((prefix, count)) = together {
            loop {
                let written = self.world.lock().calls.iter().filter(|c| c.op == "apply" && c.address.starts_with(prefix.as_str())).count();
                if written >= count {
                    break;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    result = Err(ProviderError::new(
                        ErrorKind::Timeout,
                        format!("{address}: only {written} of {count} writes came (waits hold the slots writes need)"),
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut w = self.world.lock();
        w.waiting -= 1;
        w.calls.push(Call { op: "wait", address, start, end: Instant::now() });
        result
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), ProviderError> {
        let address = request.component.address.to_string();
        let prior = request.prior.clone();
        self.run("delete", &address, |w| {
            // Delete only the generation the caller saw: under create_before_destroy the new
            // object already took the address.
            if w.objects.get(&address).is_some_and(|o| *o == prior) {
                w.objects.remove(&address);
            }
            Ok(())
        })
        .await
    }
}
