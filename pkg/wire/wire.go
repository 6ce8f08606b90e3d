// Package wire owns the binary encoding helpers that blackbox's codecs share,
// and only what they really share: a strict, schema-driven decoder of
// protobuf wire format (Schema, Field) with an encoder that omits zero
// values (Encoder); a version byte followed by length-prefixed byte strings
// (AppendFields, SplitFields); and uvarint-length-prefixed stream frames
// (AppendFrame, ReadFrame). Each record's fields, limits and meaning stay in
// the package that owns the record.
//
// Errors from decoding wrap ErrMalformed, ErrTooLarge or ErrUnsupported; a
// caller gives them its own package's errors with Wrap, so that errors.Is
// works on both.
package wire

import (
	"errors"
	"fmt"
)

// Errors every decoder here wraps.
var (
	ErrMalformed = errors.New("malformed")
	ErrTooLarge  = errors.New("too large")
	// ErrUnsupported: an Open schema met an unknown field of the critical
	// range (CriticalMin): the message needs a newer version to be read.
	ErrUnsupported = errors.New("unsupported")
)

// decodeError is a failure of kind ErrMalformed or ErrTooLarge whose text
// says only what was wrong, so that a caller's wrapping does not repeat
// the kind.
type decodeError struct {
	kind error
	msg  string
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.kind }

func malformed(format string, args ...any) error {
	return &decodeError{kind: ErrMalformed, msg: fmt.Sprintf(format, args...)}
}

func unsupported(format string, args ...any) error {
	return &decodeError{kind: ErrUnsupported, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &decodeError{kind: ErrTooLarge, msg: fmt.Sprintf(format, args...)}
}

// Wrap gives an error of this package the caller's own error for its kind
// (tooLarge for ErrTooLarge, malformed for ErrMalformed), keeping both in the
// chain. Any other error, one that already wraps malformed or tooLarge, and
// nil are returned as they are.
func Wrap(err, malformed, tooLarge error) error {
	switch {
	case errors.Is(err, malformed) || errors.Is(err, tooLarge):
		return err
	case errors.Is(err, ErrTooLarge):
		return fmt.Errorf("%w: %w", tooLarge, err)
	case errors.Is(err, ErrMalformed):
		return fmt.Errorf("%w: %w", malformed, err)
	}
	return err
}
