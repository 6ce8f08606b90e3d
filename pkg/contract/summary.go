package contract

import (
	"encoding/json"
	"fmt"
)

// Summary is a record's identity and state: what counting contracts needs
// (the node's metrics), without the signed records and history.
type Summary struct {
	ID    string `json:"id"`
	Role  Role   `json:"role"`
	State State  `json:"state"`
}

// Summaries lists every record of role (0: both) as a Summary, in key
// order. It decodes only those fields, so it is cheaper than List.
func (m *Machine) Summaries(role Role) ([]Summary, error) {
	prefix := ""
	if role != 0 {
		prefix = role.prefix()
	}
	var out []Summary
	err := m.store.View(func(kv KV) error {
		return kv.ForEach(bucketContracts, prefix, func(k string, v []byte) error {
			var s Summary
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("contract %s: decode: %w", k, err)
			}
			out = append(out, s)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list contracts: %w", err)
	}
	return out, nil
}
