package serve

// maxNameLen is the longest DNS-1123 subdomain, and so the longest CoreDump name.
const maxNameLen = 253

// ValidName reports whether name is a DNS-1123 subdomain (lower-case
// alphanumeric labels, inner '-', separated by single dots), the shape of a
// CoreDump name. Anything else, including '/', "..", NUL and escapes, is not
// looked up at all.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > maxNameLen {
		return false
	}
	labelStart := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			c := name[i]
			if !isAlnum(c) && c != '-' {
				return false
			}
			continue
		}
		// End of a label: it must be non-empty and start and end alphanumeric.
		if i == labelStart || !isAlnum(name[labelStart]) || !isAlnum(name[i-1]) {
			return false
		}
		labelStart = i + 1
	}
	return true
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
}
