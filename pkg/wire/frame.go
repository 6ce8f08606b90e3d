package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Reader is what frames are read from (a *bufio.Reader, a *bytes.Reader).
type Reader interface {
	io.Reader
	io.ByteReader
}

// AppendFrame appends one frame to dst: the total length of parts as a
// uvarint, then the parts.
func AppendFrame(dst []byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

// ReadFrameSize reads a frame's length and checks it against max, before
// anything is allocated for the body (ErrTooLarge above it). A read error,
// and a length that is not a valid uvarint, is returned as it is.
func ReadFrameSize(r io.ByteReader, max int) (int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, fmt.Errorf("frame length: %w", err)
	}
	if n > uint64(max) {
		return 0, tooLarge("frame of %d bytes exceeds %d", n, max)
	}
	return int(n), nil
}

// ReadFrame reads one frame of at most max bytes.
func ReadFrame(r Reader, max int) ([]byte, error) {
	n, err := ReadFrameSize(r, max)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("frame body: %w", err)
	}
	return buf, nil
}
