package app

import (
	"encoding/hex"
	"strings"
)

// dumpNamePrefix and dumpIDBytes make up DumpName: the prefix, then
// dumpIDBytes of a hash as lowercase hex.
const (
	dumpNamePrefix = "core-"
	dumpIDBytes    = 10
)

// dumpID is the hash in a name DumpName made.
type dumpID [dumpIDBytes]byte

// parseDumpID returns the hash of a name DumpName made, and false for any
// other name (upper-case hex included, which DumpName never writes).
func parseDumpID(name string) (id dumpID, ok bool) {
	digits, found := strings.CutPrefix(name, dumpNamePrefix)
	if !found || len(digits) != 2*dumpIDBytes || strings.ToLower(digits) != digits {
		return id, false
	}
	_, err := hex.Decode(id[:], []byte(digits))
	return id, err == nil
}

func (id dumpID) name() string { return dumpNamePrefix + hex.EncodeToString(id[:]) }

// nameSet is a set of CoreDump names. The agent's own names are kept as
// their 10 bytes of hash, in a map without pointers that the garbage
// collector does not scan; as strings, each of the thousands of dumps a
// node may have waiting would cost a string of its own (decoded from the
// watch) and a pointer in the map, some 60 bytes more. Names of another
// form, which only someone else can have given, are kept as strings. The
// zero value is empty.
type nameSet struct {
	own   map[dumpID]struct{}
	other map[string]struct{}
}

// newNameSet returns a set with room for n of the agent's names.
func newNameSet(n int) nameSet { return nameSet{own: make(map[dumpID]struct{}, n)} }

func (s *nameSet) add(name string) {
	if id, ok := parseDumpID(name); ok {
		if s.own == nil {
			s.own = map[dumpID]struct{}{}
		}
		s.own[id] = struct{}{}
		return
	}
	if s.other == nil {
		s.other = map[string]struct{}{}
	}
	s.other[name] = struct{}{}
}

func (s *nameSet) remove(name string) {
	if id, ok := parseDumpID(name); ok {
		delete(s.own, id)
		return
	}
	delete(s.other, name)
}

func (s *nameSet) has(name string) bool {
	if id, ok := parseDumpID(name); ok {
		_, found := s.own[id]
		return found
	}
	_, found := s.other[name]
	return found
}

// each calls f with every name in the set, in no particular order.
func (s *nameSet) each(f func(name string)) {
	for id := range s.own {
		f(id.name())
	}
	for name := range s.other {
		f(name)
	}
}
