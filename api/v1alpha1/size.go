package v1alpha1

import "strconv"

// DisplaySize renders a byte count the way people read dump sizes, rounded
// to one binary unit (41Mi, 1.5Gi, 812). Agents put it in spec.displaySize
// because printer columns cannot format numbers.
func DisplaySize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10)
	}
	v := float64(n)
	u := -1
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	prec := 0
	if v < 10 && v != float64(int64(v)) {
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if prec == 1 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	if s == "1024" && u < len(units)-1 {
		s, u = "1", u+1
	}
	return s + string(units[u]) + "i"
}
