package offer

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// DHTNamespace is the namespace of offer records in blackbox's private DHT.
const DHTNamespace = "blackbox"

// dhtKeyPrefix prefixes an offer record's DHT key, followed by the seller's
// peer ID.
const dhtKeyPrefix = "/" + DHTNamespace + "/offer/"

// DHTKey is the key under which a seller's latest offer is stored.
func DHTKey(seller peer.ID) string { return dhtKeyPrefix + seller.String() }

// sellerFromKey parses the seller's peer ID out of a DHT key.
func sellerFromKey(key string) (peer.ID, error) {
	rest, ok := strings.CutPrefix(key, dhtKeyPrefix)
	if !ok {
		return "", fmt.Errorf("%w: key %q is not an offer key", ErrInvalid, key)
	}
	id, err := peer.Decode(rest)
	if err != nil {
		return "", fmt.Errorf("%w: key %q: %v", ErrInvalid, key, err)
	}
	return id, nil
}

// Validator is the DHT record validator for offers: a value is valid when it
// is a well-formed offer envelope signed by the key of the peer named in the
// record's key and not expired; among valid values the highest sequence wins.
type Validator struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (v Validator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Validate implements the DHT's record.Validator.
func (v Validator) Validate(key string, value []byte) error {
	_, err := v.open(key, value)
	return err
}

func (v Validator) open(key string, value []byte) (*Offer, error) {
	seller, err := sellerFromKey(key)
	if err != nil {
		return nil, err
	}
	o, err := Open(value, v.now())
	if err != nil {
		return nil, err
	}
	if o.Seller != seller {
		return nil, fmt.Errorf("%w: record for %s under the key of %s", ErrWrongKey, o.Seller, seller)
	}
	return o, nil
}

// Select implements the DHT's record.Validator: the index of the valid value
// with the highest sequence number (the first on a tie).
func (v Validator) Select(key string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	for i, val := range values {
		o, err := v.open(key, val)
		if err != nil {
			continue
		}
		if best < 0 || o.Seq > bestSeq {
			best, bestSeq = i, o.Seq
		}
	}
	if best < 0 {
		return 0, errors.New("no valid offer record")
	}
	return best, nil
}
