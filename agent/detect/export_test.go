package detect

// String names p in test failures.
func (p pidState) String() string {
	switch p {
	case pidAlive:
		return "alive"
	case pidGone:
		return "gone"
	default:
		return "unknown"
	}
}
