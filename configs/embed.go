// Package configs holds the sample node configuration, embedded so that
// `blackbox serve` can write it into a new data dir and tests can check it
// against the built-in defaults.
package configs

import _ "embed"

// Sample is configs/blackbox.yaml: every key, documented, at its default.
//
//go:embed blackbox.yaml
var Sample []byte
