package contract

import "github.com/blackbox-market/blackbox/pkg/enumjson"

// Stored enums appear in JSON by name (pkg/enumjson); records written
// before, with numbers, still load.

// MarshalText writes the contract state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a contract state's name (or number).
func (s *State) UnmarshalText(b []byte) error { return enumjson.Parse(string(b), s, "contract state") }

// UnmarshalJSON reads a contract state's name, or the number older records hold.
func (s *State) UnmarshalJSON(b []byte) error { return enumjson.Unmarshal(b, s, "contract state") }

// MarshalText writes the contract role's name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a contract role's name (or number).
func (r *Role) UnmarshalText(b []byte) error { return enumjson.Parse(string(b), r, "contract role") }

// UnmarshalJSON reads a contract role's name, or the number older records hold.
func (r *Role) UnmarshalJSON(b []byte) error { return enumjson.Unmarshal(b, r, "contract role") }
