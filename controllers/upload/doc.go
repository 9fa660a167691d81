// Package upload moves a dump from its node's agent into object storage and
// deletes stored dumps: it fixes the object key from the policy's template,
// finds the agent through its Lease, streams the dump with a certificate
// from the policy's CA, writes the metadata file beside it, and gives up an
// attempt that stops making progress (the stall watchdog). It owns no
// CoreDump status: the CoreDump reconciler decides phases, retries and
// backoff, and writes what this package returns.
package upload
