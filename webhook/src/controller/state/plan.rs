//! The leader's writes as data: the seen-at record of each new policy
//! version (once), the removal of a policy whose `duration` or `until` has
//! passed, `FaultsInvalid` warnings, and `NotInjected` reports, each once.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::{Action, PolicyState, SourceState};
use crate::controller::expiry;
use crate::controller::objects::ObjKey;

impl PolicyState {
    /// [`plan`](Self::plan) for the current sources.
    pub fn plan_current(&mut self, now: Timestamp) -> (Vec<Action>, Option<Timestamp>) {
        let sources = std::mem::take(&mut self.sources);
        let planned = self.plan(&sources, now);
        self.sources = sources;
        planned
    }

    /// Decide the leader's writes for `sources` at `now`, and the next
    /// instant something expires.
    pub fn plan(
        &mut self,
        sources: &BTreeMap<ObjKey, SourceState>,
        now: Timestamp,
    ) -> (Vec<Action>, Option<Timestamp>) {
        let mut actions = Vec::new();
        let mut next: Option<Timestamp> = None;
        for (key, src) in sources {
            let policy = match &src.verdict {
                Err(message) => {
                    if self.warned.insert((key.clone(), src.text_version.clone())) {
                        actions.push(Action::WarnInvalid {
                            key: key.clone(),
                            message: message.clone(),
                        });
                    }
                    continue;
                }
                Ok(policy) => policy,
            };
            // The object's record counts only when it is of this version: a
            // record of the previous version stays on the object until the
            // watch echoes the new one back, and any event on the object in
            // between (the Deployment controller's own update follows every
            // edit) must not write this version's record a second time.
            let recorded = src
                .facts
                .seen_at
                .clone()
                .filter(|v| expiry::SeenAt::parse(v).is_some_and(|s| s.version == src.text_version))
                .or_else(|| {
                    self.seen_recorded
                        .get(key)
                        .filter(|s| s.version == src.text_version)
                        .map(expiry::SeenAt::to_annotation)
                });
            let (seen, write) = expiry::first_seen(recorded.as_deref(), &src.text_version, now);
            if write {
                self.seen_recorded.insert(key.clone(), seen.clone());
                actions.push(Action::RecordSeen {
                    key: key.clone(),
                    value: seen.to_annotation(),
                    version: src.text_version.clone(),
                });
            }
            let Some(deadline) = expiry::deadline(policy.duration(), policy.until(), seen.at)
            else {
                continue;
            };
            if deadline <= now {
                if self.expired.insert((key.clone(), src.text_version.clone())) {
                    actions.push(Action::Expire {
                        key: key.clone(),
                        text: src.text.clone(),
                        version: src.text_version.clone(),
                    });
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        let live: BTreeSet<&ObjKey> = sources.keys().collect();
        self.seen_recorded.retain(|k, _| live.contains(k));
        self.warned.retain(|(k, _)| live.contains(k));
        self.expired.retain(|(k, _)| live.contains(k));
        (actions, next)
    }

    /// Forget that an action was taken, so it is retried (its write failed).
    pub fn forget(&mut self, action: &Action) {
        match action {
            Action::RecordSeen { key, .. } => {
                self.seen_recorded.remove(key);
            }
            Action::Expire { key, version, .. } => {
                self.expired.remove(&(key.clone(), version.clone()));
            }
            Action::WarnInvalid { .. } => {}
            Action::ReportNotInjected { .. } => {}
        }
    }

    /// `NotInjected` reports for pods that missed injection, once per pod
    /// (uid) while it lives. `missed` holds (pod key, uid, note).
    pub fn report_missed(&mut self, missed: Vec<(ObjKey, String, String)>) -> Vec<Action> {
        let live: BTreeSet<String> = missed.iter().map(|(_, uid, _)| uid.clone()).collect();
        let actions = missed
            .into_iter()
            .filter(|(_, uid, _)| self.reported.insert(uid.clone()))
            .map(|(key, _, note)| Action::ReportNotInjected { key, note })
            .collect();
        self.reported.retain(|uid| live.contains(uid));
        actions
    }
}
