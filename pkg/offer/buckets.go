package offer

import (
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Resource-class buckets. A seller announces itself as a provider of every
// bucket its offer satisfies; a buyer asks the DHT for the providers of the
// most selective bucket its request falls in, then filters exactly. Coarse
// classes keep the number of provider records per seller small (at most
// 1 + 5 + 4 + 1) and do not reveal exact capacity to the DHT.
var (
	cpuClasses    = []uint64{1, 2, 4, 8, 16} // cores
	memoryClasses = []uint64{1, 4, 16, 64}   // GiB
)

// Bucket names a resource class, e.g. "cpu>=4", "mem>=16GiB", "region=eu".
type Bucket string

// AnyBucket is announced by every seller with something on offer.
const AnyBucket Bucket = "any"

// CID is the DHT content ID of the bucket, in blackbox's own key space.
func (b Bucket) CID() cid.Cid {
	sum, err := mh.Sum([]byte("blackbox/bucket/"+string(b)), mh.SHA2_256, -1)
	if err != nil { // SHA2-256 of a short string cannot fail
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, sum)
}

// SellerBuckets lists the buckets an offer belongs to.
func SellerBuckets(o *Offer) []Bucket {
	if o.Resources.CPUMillis == 0 {
		return nil
	}
	out := []Bucket{AnyBucket}
	for _, c := range cpuClasses {
		if o.Resources.CPUMillis >= c*1000 {
			out = append(out, Bucket(fmt.Sprintf("cpu>=%d", c)))
		}
	}
	for _, m := range memoryClasses {
		if o.Resources.MemoryBytes >= m*gib {
			out = append(out, Bucket(fmt.Sprintf("mem>=%dGiB", m)))
		}
	}
	if o.Region != "" {
		out = append(out, Bucket("region="+strings.ToLower(o.Region)))
	}
	return out
}

// QueryBucket is the one bucket a buyer looks up for a filter: its region if
// it names one, else the largest CPU class at or below the request, else the
// largest memory class, else AnyBucket. Every matching seller is in it.
func QueryBucket(f Filter) Bucket {
	if f.Region != "" {
		return Bucket("region=" + strings.ToLower(f.Region))
	}
	if b := classBucket(cpuClasses, f.Min.CPUMillis, 1000, "cpu>=%d"); b != "" {
		return b
	}
	if b := classBucket(memoryClasses, f.Min.MemoryBytes, gib, "mem>=%dGiB"); b != "" {
		return b
	}
	return AnyBucket
}

func classBucket(classes []uint64, want, unit uint64, format string) Bucket {
	var best Bucket
	for _, c := range classes {
		if want >= c*unit {
			best = Bucket(fmt.Sprintf(format, c))
		}
	}
	return best
}
