package wire

import (
	"encoding/binary"
)

// AppendFields appends the format SplitFields reads: the version byte, then
// each field as a uvarint length and its bytes.
func AppendFields(dst []byte, version byte, fields ...[]byte) []byte {
	dst = append(dst, version)
	for _, f := range fields {
		dst = binary.AppendUvarint(dst, uint64(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

// SplitFields reads what AppendFields writes, with len(max) fields, the
// i-th of at most max[i] bytes (ErrTooLarge above it): the version byte
// must be version, each length a minimal uvarint (so that an encoding has
// one meaning) within the input, and nothing may follow the last field.
// The fields returned are slices of b whose capacity ends with them.
func SplitFields(b []byte, version byte, max ...int) ([][]byte, error) {
	if len(b) < 1 || b[0] != version {
		return nil, malformed("unknown version")
	}
	b = b[1:]
	out := make([][]byte, len(max))
	for i := range max {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, malformed("field %d truncated", i+1)
		}
		if k != uvarintLen(n) {
			return nil, malformed("field %d length is not minimally encoded", i+1)
		}
		if n > uint64(max[i]) {
			return nil, tooLarge("field %d of %d bytes exceeds %d", i+1, n, max[i])
		}
		end := k + int(n)
		out[i] = b[k:end:end]
		b = b[end:]
	}
	if len(b) != 0 {
		return nil, malformed("%d trailing bytes", len(b))
	}
	return out, nil
}

func uvarintLen(n uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], n)
}
