//! The domain: accounts, sessions and presence, chats and messages. No HTTP here.

mod accounts;
mod backup;
mod bot;
mod cluster;
mod delivery;
pub mod lookalike;
mod presence;
mod recovery;
mod rooms;
pub mod state;
#[cfg(test)]
mod tests;

pub use presence::{Issued, SessionInfo};
pub use rooms::MAX_PAGE;

use crate::config::Config;
use crate::error::ApiError;
use crate::events::Event;
use crate::events::hub::Hub;
use crate::model::{UserStatus, now};
use crate::store::{self, Store, StoreError, StoreResult, UserRecord};
use state::State;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// Events produced by one change, each with its audience (session handles).
pub type Outbox = Vec<(Vec<u64>, Event)>;

/// The chat server's rules, between the HTTP layer and the store and hub.
pub struct Service {
    pub config: Arc<Config>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    /// False with `mail.provider = "none"`: registration and reset are refused.
    mail_enabled: bool,
    /// Wakes the mail sender when a change queued mail.
    mail_wake: Arc<Notify>,
    /// One lock orders every change, so events are sequenced in commit order.
    state: Mutex<State>,
    /// Hash of a random password, checked for unknown users so timing does not reveal them.
    dummy_hash: String,
    /// Exports hold it shared while they stream; deleting a removed chat's messages takes it
    /// exclusively, so an export's cut keeps every message it promised.
    purges: Arc<tokio::sync::RwLock<()>>,
    /// With several nodes: the epoch of this node's newest change read back from the log.
    applied: tokio::sync::watch::Sender<u64>,
    /// With several nodes: the reader of the log, once it runs.
    follower: std::sync::OnceLock<Arc<dyn crate::store::changes::Follower>>,
}

/// The state locked for a change. With several nodes, unlocking ends the change: what it wrote
/// goes to the shared log in its transaction (`Store::seal`).
pub(crate) struct Locked<'a> {
    guard: MutexGuard<'a, State>,
    service: &'a Service,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.service.config.cluster {
            // A failure leaves the change's epoch unsettled: its `durable` answers 503.
            let _ = self.service.store.seal(Vec::new());
        }
    }
}

impl Service {
    /// Loads chats, memberships and sessions from the store and applies the config.
    pub async fn start(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        mail_wake: Arc<Notify>,
    ) -> Result<Arc<Service>, String> {
        let dummy_hash = crate::auth::password::dummy_hash(config.password_iterations)
            .await
            .map_err(|_| "could not prepare password hashing".to_owned())?;
        let service = Arc::new(Service {
            mail_enabled: config.mail.provider != crate::config::MailProvider::None,
            config,
            store,
            hub,
            mail_wake,
            state: Mutex::new(State::default()),
            dummy_hash,
            purges: Arc::default(),
            applied: tokio::sync::watch::Sender::new(0),
            follower: std::sync::OnceLock::new(),
        });
        let loader = service.clone();
        tokio::task::spawn_blocking(move || loader.load())
            .await
            .map_err(|e| format!("loading stored data failed: {e}"))?
            .map_err(|e| e.to_string())?;
        Ok(service)
    }

    /// Startup: rebuild the in-memory state and reconcile it with the config.
    fn load(&self) -> StoreResult<()> {
        let mut st = self.lock();
        let now_secs = now();
        let now_instant = Instant::now();
        for chat in self.store.chats()? {
            st.chats.insert(crate::model::name_key(&chat.name), chat);
        }
        let mut created = Vec::new();
        for name in &self.config.chats {
            let key = crate::model::name_key(name);
            if !st.chats.contains_key(&key)
                && let Some(chat) = self.store.create_chat(name, now_secs)?
            {
                log::info!("created chat {name} from the config");
                created.push(Event::ChatCreated(crate::events::ChatEvent {
                    chat: chat.name.clone(),
                    time: chat.created,
                }));
                st.chats.insert(key, chat);
            }
        }
        self.apply_admin_list()?;
        st.accounts = self.account_names()?;
        st.blocked = lookalike::Blocks::from_stored(self.store.blocks()?, now_instant, now_secs);
        log_look_alike_pairs(&st.accounts);
        for session in self.store.sessions()? {
            if session.expires <= now_secs {
                self.store.delete_session(&session.token_hash)?;
                continue;
            }
            let status = self.status_of(&session.user_key, session.guest)?;
            // Sessions online at shutdown get a fresh inactivity window to come back.
            st.insert_session(session, status, now_instant);
        }
        for member in self.store.members()? {
            if st.online.contains_key(&member.user_key) {
                st.add_member(member.chat_id, &member.user_key, &member.user);
            } else {
                // Membership ends when its user goes offline; a crash may have skipped that.
                self.store.remove_member(member.chat_id, &member.user_key)?;
            }
        }
        // Several nodes share one store: a stopped node's queue snapshot is none of theirs.
        let snapshot = if self.config.cluster {
            None
        } else {
            self.store.take_queues()?
        };
        let restored = match snapshot {
            Some(snapshot) => match self
                .hub
                .restore(&snapshot, |h| st.activity.contains_key(&h))
            {
                Ok(n) => {
                    log::info!("restored {n} event queues");
                    true
                }
                Err(e) => {
                    log::warn!("event queues from the last run were not restored: {e}");
                    false
                }
            },
            None => false,
        };
        let online: Vec<u64> = st.activity.keys().copied().collect();
        // Several nodes: the log's replay opens them first, where they opened (`replay_log`).
        for handle in online.iter().filter(|_| !self.config.cluster) {
            self.hub.open_session(*handle);
        }
        if !restored && !online.is_empty() && !self.config.cluster {
            // After a crash the queues are gone: legacy pollers learn it and refetch (docs/design.md, Event delivery).
            let resync = Event::Resync(crate::events::ResyncEvent {
                reason: "the server restarted without its event queues".into(),
            });
            self.hub.stage(0, online.iter().copied(), &resync);
        }
        // Sessions that stayed online hear of a config chat created again (an admin had
        // removed it), after what their restored queues hold, as if it happened now.
        if self.config.cluster {
            // Through the log, as every change of a node: the other nodes' sessions hear too.
            let audience = st.everyone();
            self.publish(created.into_iter().map(|e| (audience.clone(), e)).collect());
            return Ok(());
        }
        for event in &created {
            self.hub.stage(0, online.iter().copied(), event);
        }
        self.hub.release(0);
        Ok(())
    }

    /// Grants admin to the registered users named in `admins` (never revokes: see docs/design.md).
    fn apply_admin_list(&self) -> StoreResult<()> {
        for name in &self.config.admins {
            if let Some(mut user) = self.store.user(&crate::model::name_key(name))?
                && !user.admin
            {
                user.admin = true;
                self.store.update_user(&user, None)?;
                log::info!("granted admin to {} from the config", user.name);
            }
        }
        Ok(())
    }

    /// Every registered name, verified or not, by look-alike key.
    fn account_names(&self) -> StoreResult<lookalike::Index> {
        let users = self.store.users()?;
        Ok(lookalike::Index::of(users.iter().map(|u| u.name.as_str())))
    }

    fn is_listed_admin(&self, name: &str) -> bool {
        let key = crate::model::name_key(name);
        self.config
            .admins
            .iter()
            .any(|a| crate::model::name_key(a) == key)
    }

    fn lock(&self) -> Locked<'_> {
        let guard = self.lock_unsealed();
        if self.config.cluster {
            self.store.begin_change();
        }
        Locked {
            guard,
            service: self,
        }
    }

    /// The state locked to apply what the shared log says, which is no change of this node's.
    fn lock_unsealed(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole server down with a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the state for a change made by `session`, which may have ended since it was
    /// authenticated: only a session still online may change anything. While storage is down
    /// nothing may: memory may still hold changes that failed, until they are dropped.
    fn lock_online(&self, session: &SessionInfo) -> Result<Locked<'_>, ApiError> {
        if !self.store.available() {
            return Err(ApiError::Unavailable);
        }
        let st = self.lock();
        if !st.activity.contains_key(&session.handle) {
            return Err(ApiError::NotLoggedIn);
        }
        Ok(st)
    }

    /// The status flags of a user as the server knows them now.
    fn status_of(&self, user_key: &str, guest: bool) -> StoreResult<UserStatus> {
        if guest {
            return Ok(UserStatus::default());
        }
        Ok(self
            .store
            .user(user_key)?
            .map(|u| user_status(&u))
            .unwrap_or_default())
    }

    /// Stages a change's events at the store's current epoch; they reach queues once it is durable.
    fn publish(&self, events: Outbox) -> u64 {
        if self.config.cluster {
            return self.seal_events(events);
        }
        let epoch = self.store.write_epoch();
        for (targets, event) in events {
            self.hub.stage(epoch, targets, &event);
        }
        let durability = *self.store.durability().borrow();
        self.settle(&durability);
        epoch
    }

    /// Waits until the change with `epoch` is on disk (immediate with `durability = "relaxed"`),
    /// and releases its events before the answer: a client that got 200 finds them queued, even
    /// when the background release has not run yet.
    async fn durable(&self, epoch: u64) -> Result<(), ApiError> {
        if self.config.cluster {
            // A change made without events is sealed as the lock drops, after `epoch` was read.
            let epoch = epoch.max(self.store.write_epoch());
            store::wait_durable(&*self.store, epoch).await?;
            self.read_back(epoch).await;
            return Ok(());
        }
        store::wait_durable(&*self.store, epoch).await?;
        let durability = *self.store.durability().borrow();
        self.settle(&durability);
        Ok(())
    }

    /// Releases staged events as the flusher makes writes durable, and rebuilds memory from
    /// the store when it recovered from a failure; runs until the store stops.
    pub async fn publish_durable_events(self: Arc<Self>) {
        let mut watch = self.store.durability();
        let mut recoveries = watch.borrow().recoveries;
        while watch.changed().await.is_ok() {
            let durability = *watch.borrow_and_update();
            self.settle(&durability);
            if durability.recoveries != recoveries {
                recoveries = durability.recoveries;
                let service = self.clone();
                let resynced = tokio::task::spawn_blocking(move || service.resync_with_store());
                match resynced.await {
                    Ok(Ok(())) => log::info!("chats and sessions reloaded from storage"),
                    Ok(Err(e)) => log::error!("reloading chats and sessions failed: {e}"),
                    Err(e) => log::error!("reloading chats and sessions failed: {e}"),
                }
            }
        }
    }
}

/// Accounts made before names were compared by look (or brought in by an import) may look
/// alike: both keep working, and the operator hears of them once at start.
fn log_look_alike_pairs(accounts: &lookalike::Index) {
    let pairs = accounts.pairs();
    if pairs.is_empty() {
        return;
    }
    let listed: Vec<String> = pairs
        .iter()
        .take(20)
        .map(|(a, b)| format!("{a} / {b}"))
        .collect();
    let more = if pairs.len() > listed.len() {
        ", …"
    } else {
        ""
    };
    log::warn!(
        "{} pairs of existing names look alike; both keep working: {}{more}",
        pairs.len(),
        listed.join(", ")
    );
}

/// The status flags an account carries.
pub fn user_status(user: &UserRecord) -> UserStatus {
    UserStatus {
        verified: user.verified,
        admin: user.admin,
        bot: user.bot,
    }
}

/// Storage failures reach clients only as 503 `service unavailable`.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        // Storage details stay in the log; the client learns only that we are unavailable. A
        // disk failure is logged once by the store, not once per request.
        if err.is_outage() {
            log::debug!("{err}");
        } else {
            log::error!("{err}");
        }
        ApiError::Unavailable
    }
}
