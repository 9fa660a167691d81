package corepattern

// Current reads the sysctl file, without the trailing newline the kernel adds.
func (m *Manager) Current() (string, error) {
	return m.read()
}
