//! The in-memory store: fast, and gone when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::keys::KeyStore;
use super::{SessionStore, StoreError};
use crate::domain::TenantId;
use crate::domain::key::{ApiKey, TenantUsage};
use crate::domain::measure::measure_context;
use crate::domain::receipt::TurnReceipt;
use crate::domain::session::{Session, SharedMessage};

/// One session, its history and its turn receipts (by key).
struct Record {
    session: Session,
    messages: Vec<SharedMessage>,
    receipts: HashMap<String, TurnReceipt>,
}

/// A record's key: the tenant, then the session id. Ordered that way, one tenant's sessions
/// are one contiguous range of the map, sorted by id.
type Key = (TenantId, String);

fn key(tenant: &TenantId, session_id: &str) -> Key {
    (tenant.clone(), session_id.to_string())
}

/// Sessions in a `BTreeMap` keyed by (tenant, session id) (ordered, so listing pages by key)
/// behind one mutex.
///
/// A plain `std::sync::Mutex` suffices: every operation is a short, synchronous map access and
/// no `.await` ever happens while it is held. Turns are serialized per session by the engine,
/// not by this lock.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<Key, Record>>,
    /// API keys by id.
    keys: Mutex<HashMap<String, ApiKey>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Record>> {
        // A panic while holding the lock cannot leave a record half-written (every write
        // below is a single assignment after all checks), so a poisoned lock is still sound.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .records()
            .get(&key(tenant, session_id))
            .map(|r| r.session.clone()))
    }

    async fn list_sessions(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let records = self.records();
        // The empty id sorts first, so (tenant, "") starts the tenant's range.
        let lower = match after {
            Some(after) => Bound::Excluded(key(tenant, after)),
            None => Bound::Included(key(tenant, "")),
        };
        Ok(records
            .range((lower, Bound::Unbounded))
            .take_while(|((owner, _), _)| owner == tenant)
            .take(limit)
            .map(|(_, r)| r.session.clone())
            .collect())
    }

    async fn newest_sessions(
        &self,
        tenant: &TenantId,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<Session>, StoreError> {
        // Copies out under the lock (no `.await` here), sorts outside it.
        let mut sessions: Vec<Session> = {
            let records = self.records();
            records
                .range((Bound::Included(key(tenant, "")), Bound::Unbounded))
                .take_while(|((owner, _), _)| owner == tenant)
                .filter(|(_, r)| !r.session.is_expired(now))
                .map(|(_, r)| r.session.clone())
                .collect()
        };
        super::sort_newest_first(&mut sessions);
        sessions.truncate(limit);
        Ok(sessions)
    }

    async fn commit(
        &self,
        tenant: &TenantId,
        session: &Session,
        expected_version: Option<u64>,
        messages: &[SharedMessage],
        receipt: Option<&TurnReceipt>,
    ) -> Result<(), StoreError> {
        let mut records = self.records();
        let record = match expected_version {
            None => {
                let id = key(tenant, &session.id);
                if records.contains_key(&id) {
                    return Err(StoreError::AlreadyExists(session.id.clone()));
                }
                check_continuity(&session.id, 0, messages)?;
                records.entry(id).or_insert(Record {
                    session: session.clone(),
                    messages: messages.to_vec(),
                    receipts: HashMap::new(),
                })
            }
            Some(version) => {
                let record = records
                    .get_mut(&key(tenant, &session.id))
                    .ok_or_else(|| StoreError::NotFound(session.id.clone()))?;
                if record.session.version != version {
                    return Err(StoreError::Conflict(session.id.clone()));
                }
                check_continuity(&session.id, record.messages.len() as u64, messages)?;
                record.session = session.clone();
                record.messages.extend_from_slice(messages);
                record
            }
        };
        if let Some(receipt) = receipt {
            record.receipts.insert(receipt.key.clone(), receipt.clone());
        }
        Ok(())
    }

    async fn get_receipt(
        &self,
        tenant: &TenantId,
        session_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<TurnReceipt>, StoreError> {
        Ok(self
            .records()
            .get(&key(tenant, session_id))
            .and_then(|r| r.receipts.get(idempotency_key).cloned()))
    }

    async fn delete_receipts_before(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let mut records = self.records();
        let mut left = limit;
        for record in records.values_mut() {
            if left == 0 {
                break;
            }
            let old: Vec<String> = record
                .receipts
                .values()
                .filter(|r| r.create_time < before)
                .take(left)
                .map(|r| r.key.clone())
                .collect();
            for key in &old {
                record.receipts.remove(key);
            }
            left -= old.len();
        }
        Ok((limit - left) as u64)
    }

    async fn delete_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .records()
            .remove(&key(tenant, session_id))
            .map(|r| r.messages.len() as u64))
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        let records = self.records();
        let record = find(&records, tenant, session_id)?;
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(record
            .messages
            .iter()
            .skip(from)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn list_messages_before(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        let records = self.records();
        let record = find(&records, tenant, session_id)?;
        let end = usize::try_from(before)
            .unwrap_or(usize::MAX)
            .min(record.messages.len());
        Ok(record.messages[..end]
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn search_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        let records = self.records();
        let record = find(&records, tenant, session_id)?;
        let needle = query.to_lowercase();
        Ok(record
            .messages
            .iter()
            .rev()
            .filter(|m| m.content.to_lowercase().contains(&needle))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count_sessions(&self, tenant: &TenantId, now: SystemTime) -> Result<u64, StoreError> {
        let records = self.records();
        Ok(records
            .range((Bound::Included(key(tenant, "")), Bound::Unbounded))
            .take_while(|((owner, _), _)| owner == tenant)
            .filter(|(_, r)| !r.session.is_expired(now))
            .count() as u64)
    }

    async fn delete_expired(&self, now: SystemTime, limit: usize) -> Result<u64, StoreError> {
        let mut records = self.records();
        let expired: Vec<Key> = records
            .iter()
            .filter(|(_, r)| r.session.is_expired(now))
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect();
        for id in &expired {
            records.remove(id);
        }
        Ok(expired.len() as u64)
    }

    async fn tenant_usage(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<TenantUsage>, StoreError> {
        let records = self.records();
        let mut usage: Vec<TenantUsage> = Vec::new();
        for ((owner, _), record) in records.iter() {
            if tenant.is_some_and(|wanted| wanted != owner) {
                continue;
            }
            if usage.last().is_none_or(|last| &last.tenant != owner) {
                usage.push(TenantUsage {
                    tenant: owner.clone(),
                    ..TenantUsage::default()
                });
            }
            let entry = usage.last_mut().expect("pushed above");
            entry.sessions += 1;
            entry.messages += record.messages.len() as u64;
            entry.bytes += session_bytes(&record.session);
            for message in &record.messages {
                entry.tokens += u64::from(message.token_count);
                entry.bytes += message_bytes(message);
            }
        }
        Ok(usage)
    }

    async fn delete_tenant(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        let mut records = self.records();
        let ids: Vec<Key> = records
            .range((Bound::Included(key(tenant, "")), Bound::Unbounded))
            .take_while(|((owner, _), _)| owner == tenant)
            .map(|(key, _)| key.clone())
            .collect();
        let mut messages = 0;
        for id in &ids {
            if let Some(record) = records.remove(id) {
                messages += record.messages.len() as u64;
            }
        }
        Ok((ids.len() as u64, messages))
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.contains_key(&key.id) {
            return Err(StoreError::AlreadyExists(key.id.clone()));
        }
        keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys.get(id).cloned())
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut listed: Vec<ApiKey> = keys
            .values()
            .filter(|k| tenant.is_none_or(|t| &k.tenant == t))
            .cloned()
            .collect();
        listed.sort_by(|a, b| (&a.tenant, a.create_time).cmp(&(&b.tenant, b.create_time)));
        Ok(listed)
    }

    async fn revoke_key(&self, id: &str, at: SystemTime) -> Result<Option<ApiKey>, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys.get_mut(id).map(|key| {
            key.revoke_time.get_or_insert(at);
            key.clone()
        }))
    }

    async fn delete_tenant_keys(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let before = keys.len();
        keys.retain(|_, key| &key.tenant != tenant);
        Ok((before - keys.len()) as u64)
    }
}

/// What a session's own document weighs, as the SQL stores count it (roughly: its texts).
fn session_bytes(session: &Session) -> u64 {
    let (_, context) = measure_context(&session.context);
    let tools: usize = session
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + measure_context(&t.input_schema).1)
        .sum();
    let labels: usize = session.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    (session.system_prompt.len() + context + tools + labels) as u64
}

/// What a stored message weighs: its text and its tool calls' arguments.
fn message_bytes(message: &SharedMessage) -> u64 {
    let calls: usize = message
        .tool_calls
        .iter()
        .map(|c| c.name.len() + measure_context(&c.arguments).1)
        .sum();
    (message.content.len() + calls) as u64
}

fn find<'a>(
    records: &'a BTreeMap<Key, Record>,
    tenant: &TenantId,
    session_id: &str,
) -> Result<&'a Record, StoreError> {
    records
        .get(&key(tenant, session_id))
        .ok_or_else(|| StoreError::NotFound(session_id.to_string()))
}

/// Refuses messages that would not continue the history exactly (a gap or an overlap means
/// the caller's view of the session is stale).
fn check_continuity(
    session_id: &str,
    next: u64,
    messages: &[SharedMessage],
) -> Result<(), StoreError> {
    for (offset, message) in messages.iter().enumerate() {
        if message.index != next + offset as u64 {
            return Err(StoreError::Conflict(session_id.to_string()));
        }
    }
    Ok(())
}
