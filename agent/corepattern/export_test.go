package corepattern

// Current reads the core_pattern sysctl file, without the trailing newline the kernel adds.
func (m *Manager) Current() (string, error) {
	return read(m.pattern.path)
}
