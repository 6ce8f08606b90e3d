package offer

import (
	"fmt"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DHTProtocolPrefix makes blackbox's DHT its own network, separate from IPFS.
const DHTProtocolPrefix = "/blackbox"

// NewDHT starts blackbox's Kademlia DHT on h: its own protocol prefix, the
// offer record validator, the given bootstrap peers, and store as its
// datastore (nil: a RecordStore with DefaultStoreLimits). Server mode
// stores records for others and answers BucketProtocolID from the offers
// of the providers whose records store holds (ServeBuckets); client mode
// (for short-lived CLI nodes) does neither.
func NewDHT(h host.Host, server bool, bootstrap []peer.AddrInfo, store *RecordStore, extra ...dht.Option) (*dht.IpfsDHT, error) {
	mode := dht.ModeClient
	if server {
		mode = dht.ModeServer
	}
	if store == nil {
		store = NewRecordStore(h.ID(), DefaultStoreLimits())
	}
	opts := append([]dht.Option{
		dht.Mode(mode),
		dht.ProtocolPrefix(DHTProtocolPrefix),
		dht.NamespacedValidator(DHTNamespace, Validator{}),
		dht.BootstrapPeers(bootstrap...),
		dht.Datastore(store),
	}, extra...)
	d, err := dht.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("start dht: %w", err)
	}
	if server {
		ServeBuckets(BucketIndexConfig{Host: h, Closest: closestIn(d)}, store)
	}
	return d, nil
}

// closestIn returns the peers of d's routing table closest to a DHT key.
func closestIn(d *dht.IpfsDHT) func(key []byte, count int) []peer.ID {
	return func(key []byte, count int) []peer.ID {
		return d.RoutingTable().NearestPeers(kb.ConvertKey(string(key)), count)
	}
}
