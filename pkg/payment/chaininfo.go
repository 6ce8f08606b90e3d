package payment

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
)

// ChainInfo is what a health check needs to know about the chain source:
// which chain it follows, how far, and how its peers' clocks compare.
type ChainInfo struct {
	// Network is the chain the source follows, by its genesis block, in
	// payment.network's words (mainnet, testnet, signet, regtest); empty
	// when it is none of those.
	Network string
	// Height and TipTime are the best block's.
	Height  int32
	TipTime time.Time
	// Peers is how many peers the source has; TimeOffset is the median
	// offset of their clocks from the source's (btcd's getinfo), known
	// only when HasTimeOffset.
	Peers         int32
	TimeOffset    time.Duration
	HasTimeOffset bool
}

// ErrChainUnreachable marks a chain source that does not accept
// connections at all (nothing listens, or the host is unknown).
var ErrChainUnreachable = errors.New("chain source not reachable")

// DialCheck connects to the configured RPC endpoint once, with timeout,
// and hangs up: a quick answer to "is anything listening", where an RPC
// call to a dead btcd retries for 20 s before it gives up.
func (c *Config) DialCheck(ctx context.Context, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", c.RPCHost)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrChainUnreachable, err)
	}
	return conn.Close()
}

// Info asks btcd which chain it follows (genesis block), its tip and its
// peers' clock offset. Call Config.DialCheck first: btcd's client retries
// a refused connection for 20 s.
func (b *BtcdChain) Info(ctx context.Context) (ChainInfo, error) {
	var info ChainInfo
	type result struct {
		info ChainInfo
		err  error
	}
	// The RPC client takes no context: bound it from here.
	done := make(chan result, 1)
	go func() {
		g, err := b.rpc.GetBlockHash(0)
		if err != nil {
			done <- result{err: fmt.Errorf("genesis block: %w", rpcError(err))}
			return
		}
		info.Network = NetworkOfGenesis(g.String())
		best, height, err := b.rpc.GetBestBlock()
		if err != nil {
			done <- result{err: fmt.Errorf("best block: %w", rpcError(err))}
			return
		}
		hdr, err := b.rpc.GetBlockHeaderVerbose(best)
		if err != nil {
			done <- result{err: fmt.Errorf("best block header: %w", rpcError(err))}
			return
		}
		info.Height, info.TipTime = height, time.Unix(hdr.Time, 0)
		// getinfo is btcd's; another node may not have it.
		if gi, err := b.rpc.GetInfo(); err == nil {
			info.Peers = gi.Connections
			info.TimeOffset, info.HasTimeOffset = time.Duration(gi.TimeOffset)*time.Second, true
		}
		done <- result{info: info}
	}()
	select {
	case r := <-done:
		return r.info, r.err
	case <-ctx.Done():
		return info, fmt.Errorf("ask btcd for its chain: %w", ctx.Err())
	}
}

// rpcError says what an authentication failure means (btcd answers 401
// with an empty body, which the client reports as a JSON error).
func rpcError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "401") || strings.Contains(strings.ToLower(msg), "unauthorized") ||
		strings.Contains(msg, "unexpected end of JSON input") {
		return fmt.Errorf("btcd refused payment.rpc_user/rpc_pass (%v)", err)
	}
	return err
}

// NetworkOfGenesis names the network whose genesis block hash is hash, in
// payment.network's words; "" when it is none this node knows.
func NetworkOfGenesis(hash string) string {
	for _, p := range []*chaincfg.Params{&chaincfg.MainNetParams, &chaincfg.TestNet3Params, &chaincfg.TestNet4Params, &chaincfg.SigNetParams, &chaincfg.RegressionNetParams} {
		if p.GenesisHash.String() == hash {
			switch p.Net {
			case chaincfg.MainNetParams.Net:
				return "mainnet"
			case chaincfg.TestNet3Params.Net:
				return "testnet"
			case chaincfg.TestNet4Params.Net:
				return "testnet4"
			case chaincfg.SigNetParams.Net:
				return "signet"
			}
			return "regtest"
		}
	}
	return ""
}

// CanonicalNetwork is a network name as NetworkOfGenesis says it
// ("main" and "bitcoin" are mainnet, "testnet3" is testnet).
func CanonicalNetwork(name string) string {
	p, err := NetParams(name)
	if err != nil {
		return name
	}
	return NetworkOfGenesis(p.GenesisHash.String())
}

// Required values of Config.Required.
const (
	RequiredAuto = "auto"
)

// IsRequired resolves Config.Required: "auto" means required when the node
// runs as a service (underService), else not.
func (c *Config) IsRequired(underService bool) bool {
	if c.Required == "" || c.Required == RequiredAuto {
		return underService
	}
	b, _ := strconv.ParseBool(c.Required)
	return b
}

func (c *Config) validateRequired() error {
	if c.Required == "" || c.Required == RequiredAuto {
		return nil
	}
	if _, err := strconv.ParseBool(c.Required); err != nil {
		return fmt.Errorf("required: want auto, true or false, not %q", c.Required)
	}
	return nil
}
