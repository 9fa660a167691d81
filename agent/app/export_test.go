package app

// len is the number of names in the set.
func (s *nameSet) len() int { return len(s.own) + len(s.other) }
