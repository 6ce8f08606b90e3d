// Package enumjson owns how stored enums (contract and channel states,
// roles) appear in JSON: by name, so that `--json` output and the API say
// "running", not 4; read back from a name or from the number that records
// written before names were used hold, so old records still load.
package enumjson

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Enum is a stored enum: a small number with a name.
type Enum interface {
	~uint8
	String() string
}

// Unmarshal reads a JSON name or number into dst; what names the enum in
// errors.
func Unmarshal[T Enum](b []byte, dst *T, what string) error {
	if n, err := strconv.ParseUint(string(b), 10, 8); err == nil {
		*dst = T(n)
		return nil
	}
	var name string
	if err := json.Unmarshal(b, &name); err != nil {
		return fmt.Errorf("%s: want a name or a number, got %s", what, b)
	}
	return Parse(name, dst, what)
}

// Parse reads a name into dst (a map key, or a name given as text); a
// decimal number is taken as it is.
func Parse[T Enum](name string, dst *T, what string) error {
	for i := range 256 {
		if T(i).String() == name {
			*dst = T(i)
			return nil
		}
	}
	if n, err := strconv.ParseUint(name, 10, 8); err == nil {
		*dst = T(n)
		return nil
	}
	return fmt.Errorf("unknown %s %q", what, name)
}
