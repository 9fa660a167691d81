package serve

import "net/http"

// NewHandler returns the routes without TLS, with opts' defaults, for tests
// that serve them without a listener.
func NewHandler(opts Options) http.Handler {
	return newHandler(opts.withDefaults())
}
