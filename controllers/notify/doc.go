// Package notify tells people outside the cluster about core dumps: it
// decides which of a policy's notification sinks a CoreDump is due at,
// renders the payload each kind of sink expects (CoreDog's JSON, CloudEvents,
// Slack, Microsoft Teams, WeCom, DingTalk, Lark), signs it where the sink
// asks for it, and delivers it from a bounded queue with retries and
// backoff. It records deliveries in annotations of the CoreDump
// (coredog.io/notified, coredog.io/notify-failed), so that a restart or a
// re-reconcile does not send a notification twice, and it reports how each
// sink fares for the policy's NotificationsReady condition.
//
// It must not delay or fail uploads: the CoreDump reconciler only asks it to
// mark due sinks and to queue work, which never blocks; sending happens on
// the notifier's own workers. It reads Secrets for sink URLs but never puts
// a URL, token or signing secret into a log line, an error, an event or a
// condition: sink URLs carry their credentials. It does not upload, delete
// or change the phase of dumps.
//
// # Delivery
//
// Delivery is at least once: a notification is recorded after the sink
// accepted it, so a controller that dies between the two sends it again
// when it comes back. Each job is retried with exponential backoff
// (Options.BackoffBase, doubling up to Options.BackoffCap) for
// Options.Attempts attempts; a sink that answers 5xx, 429 or 408, or cannot
// be reached, is retried, any other refusal is final. After
// Options.FailingAfter consecutive failures a sink shows as failing in its
// policy's NotificationsReady condition until it accepts a notification
// again or its configuration changes.
//
// # Throttled dumps
//
// Throttled dumps notify once per rate-limit window, not once each: of the
// throttled dumps sharing a budget (policy, workload, signature), the first
// one opens a window of the policy's rateLimit.window, and later throttled
// dumps created within that window are counted in its notification, which
// is sent when the window closes. The decision is computed from the
// CoreDumps themselves, as the rate limit is, so it survives restarts.
package notify
