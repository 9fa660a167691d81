package corefile

// HasSpecifier reports whether the pattern contains the specifier c (for example 't').
func (p *Pattern) HasSpecifier(c byte) bool { return c != '%' && p.has[c] }
