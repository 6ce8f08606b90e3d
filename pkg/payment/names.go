package payment

import "github.com/blackbox-market/blackbox/pkg/enumjson"

// Stored enums appear in JSON by name (pkg/enumjson); records written
// before, with numbers, still load.

// MarshalText writes the channel state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a channel state's name (or number).
func (s *State) UnmarshalText(b []byte) error { return enumjson.Parse(string(b), s, "channel state") }

// UnmarshalJSON reads a channel state's name, or the number older records hold.
func (s *State) UnmarshalJSON(b []byte) error { return enumjson.Unmarshal(b, s, "channel state") }

// MarshalText writes the channel role's name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a channel role's name (or number).
func (r *Role) UnmarshalText(b []byte) error { return enumjson.Parse(string(b), r, "channel role") }

// UnmarshalJSON reads a channel role's name, or the number older records hold.
func (r *Role) UnmarshalJSON(b []byte) error { return enumjson.Unmarshal(b, r, "channel role") }

// MarshalText writes the escrow state's name.
func (e EscrowState) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// UnmarshalText reads a escrow state's name (or number).
func (e *EscrowState) UnmarshalText(b []byte) error {
	return enumjson.Parse(string(b), e, "escrow state")
}

// UnmarshalJSON reads a escrow state's name, or the number older records hold.
func (e *EscrowState) UnmarshalJSON(b []byte) error { return enumjson.Unmarshal(b, e, "escrow state") }
