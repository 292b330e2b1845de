//! Problem emails held for `--notification-batch-window`, so that when several connections of
//! the same owners break for the same cause at about the same time (a Meta password change kills
//! every Page) the owners get one message listing the channels instead of one per channel. Each
//! connection still records its own notice in `status.lastNotification` when it is planned;
//! only the email is grouped (webhooks are per connection and go at once).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Delivery;
use super::decide::News;

/// The owners (sorted, lowercased) and the news: what makes notices one message.
pub type Key = (Vec<String>, News);

/// Most channels one grouped email lists; a notice past it goes in an email of its own, so a
/// message (and its `X-Relink-Connection` header) stays a size mail servers take.
pub const MAX_BATCH: usize = 100;

/// Open batches, each waiting for its window to close.
#[derive(Default)]
pub struct Batches {
    open: Mutex<HashMap<Key, Vec<Delivery>>>,
}

impl Batches {
    /// Adds an email delivery to its batch: `Ok(true)` when it opened the batch (the caller then
    /// flushes it once the window has passed), `Err(delivery)` when the batch is full.
    pub fn add(&self, key: Key, delivery: Delivery) -> Result<bool, Box<Delivery>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let batch = open.entry(key).or_default();
        if batch.len() >= MAX_BATCH {
            return Err(Box::new(delivery));
        }
        batch.push(delivery);
        Ok(batch.len() == 1)
    }

    /// Closes the batch and returns what it holds.
    pub fn take(&self, key: &Key) -> Vec<Delivery> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(key).unwrap_or_default()
    }
}

/// The key of a delivery whose email may be grouped: a problem or a reminder.
pub fn key(owners: &[&str], news: News) -> Option<Key> {
    if !matches!(news, News::Problem(_) | News::Reminder(_)) {
        return None;
    }
    let mut owners: Vec<String> = owners.iter().map(|o| o.to_lowercase()).collect();
    owners.sort();
    owners.dedup();
    Some((owners, news))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;

    #[test]
    fn same_owners_and_cause_share_a_key() {
        let revoked = News::Problem(Reason::Revoked);
        assert_eq!(
            key(&["b@x.io", "A@x.io"], revoked),
            key(&["a@x.io", "b@x.io"], revoked)
        );
        assert_ne!(
            key(&["a@x.io"], revoked),
            key(&["a@x.io"], News::Problem(Reason::ScopesMissing))
        );
        assert_eq!(key(&["a@x.io"], News::Recovery), None);
        assert_eq!(key(&["a@x.io"], News::ExpiryWarning), None);
    }

    fn delivery(name: &str) -> Delivery {
        let news = News::Problem(Reason::Revoked);
        Delivery {
            conn: crate::api::ChannelConnection::new(
                name,
                crate::api::ChannelConnectionSpec::new("meta", "tokens"),
            ),
            notice: crate::notify::message::Notice {
                name: name.into(),
                display_name: name.into(),
                provider_type: None,
                ..crate::notify::message::Notice::example(news)
            },
            targets: vec![super::super::Channel::Email],
        }
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_and_hands_back_the_rest() {
        let batches = Batches::default();
        let k = key(&["a@x.io"], News::Problem(Reason::Revoked)).unwrap();
        assert!(matches!(batches.add(k.clone(), delivery("c0")), Ok(true)));
        for i in 1..MAX_BATCH {
            assert!(matches!(
                batches.add(k.clone(), delivery(&format!("c{i}"))),
                Ok(false)
            ));
        }
        let past = batches.add(k.clone(), delivery("past")).unwrap_err();
        assert_eq!(past.notice.name, "past");
        assert_eq!(batches.take(&k).len(), MAX_BATCH);
        assert!(batches.take(&k).is_empty());
    }
}
