package offer

import (
	"fmt"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DHTProtocolPrefix makes blackbox's DHT its own network, separate from IPFS.
const DHTProtocolPrefix = "/blackbox"

// NewDHT starts blackbox's Kademlia DHT on h: its own protocol prefix, the
// offer record validator, the given bootstrap peers, and a RecordStore with
// DefaultStoreLimits (pass dht.Datastore(NewRecordStore(...)) in extra for
// others). Server mode stores records for others; client mode (for
// short-lived CLI nodes) does not.
func NewDHT(h host.Host, server bool, bootstrap []peer.AddrInfo, extra ...dht.Option) (*dht.IpfsDHT, error) {
	mode := dht.ModeClient
	if server {
		mode = dht.ModeServer
	}
	opts := append([]dht.Option{
		dht.Mode(mode),
		dht.ProtocolPrefix(DHTProtocolPrefix),
		dht.NamespacedValidator(DHTNamespace, Validator{}),
		dht.BootstrapPeers(bootstrap...),
		dht.Datastore(NewRecordStore(h.ID(), DefaultStoreLimits())),
	}, extra...)
	d, err := dht.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("start dht: %w", err)
	}
	return d, nil
}
