package contract

import (
	"regexp"
	"strconv"
)

// Version mixing. Proposals, requests (with their inputs and service),
// decisions and receipts decode with Open schemas (wire.Schema.Open): a
// field a newer version added is skipped and kept (the Unknown fields), so
// a node one version older still reads a newer node's records, verifies
// their signatures (over the bytes received) and computes the same
// contract ID. A field that must not be ignored is numbered from
// wire.CriticalMin up; a seller that does not know it rejects the proposal
// with ReasonUnsupported, naming the field.
//
// Sellers from before the Open schemas (before this file) refuse every
// unknown field as malformed. olderSeller turns such a refusal of a field
// this buyer sent into what it means.

// requestFieldNames names the request fields added after the first
// release, which an older seller may not know.
var requestFieldNames = map[int]string{
	rqEscrow:  "escrow (escrow_arbiter, request field 17)",
	rqService: "services (request field 18)",
}

var unknownFieldRE = regexp.MustCompile(`decode (\w+): invalid contract record: malformed: unknown field (\d+)`)

// olderSeller reports whether a rejection is an older seller's "unknown
// field" from a strict decoder, and if so the reason and message to show.
func olderSeller(d *Decision) (Reason, string, bool) {
	if d.Reason != ReasonMalformed {
		return "", "", false
	}
	m := unknownFieldRE.FindStringSubmatch(d.Message)
	if m == nil {
		return "", "", false
	}
	what := m[1] + " field " + m[2]
	if n, _ := strconv.Atoi(m[2]); m[1] == "request" && requestFieldNames[n] != "" {
		what = requestFieldNames[n]
	}
	return ReasonUnsupported, "the seller runs an older blackbox that does not support " + what + " (it said: " + truncate(d.Message, 120) + ")", true
}
