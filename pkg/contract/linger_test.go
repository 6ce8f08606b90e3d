package contract

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestLingerCloseLastFrameSurvivesHostClose: a seller that ends a job
// stream with a last frame (a killed job's receipt) and then stops, its
// host closing the connection at once, still gets the frame to a buyer
// that reads it late: the handler returns (and the host closes) only once
// the buyer has closed its side. yamux sends a stream's frames from a
// queue, and a connection that closes resets the buyer's stream, whose
// reads then drop what they had not read: with a plain Close, the buyer
// read "stream reset" (TestSellerSIGTERMMidJob failed so in CI, under
// load, the buyer paying the bill as the receipt came).
// With a live job's reader still reading the stream, the handler waits
// for it: two reads waiting at once, yamux wakes one at the buyer's close
// and, clearing the deadline, leaves the other waiting forever (a seller
// that never stopped).
func TestLingerCloseLastFrameSurvivesHostClose(t *testing.T) {
	for _, reader := range []bool{false, true} {
		name := "handler alone"
		if reader {
			name = "with a live job's reader"
		}
		t.Run(name, func(t *testing.T) { lingerCloseOnce(t, reader) })
	}
}

func lingerCloseOnce(t *testing.T, reader bool) {
	seller := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	buyer := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	const proto = "/blackbox/test/linger"
	handled := make(chan struct{})
	seller.SetStreamHandler(proto, func(st network.Stream) {
		defer close(handled)
		c := newConn(st)
		if _, _, err := c.recv(maxCtlFrame); err != nil {
			st.Reset()
			return
		}
		if reader {
			c.reading.Go(func() {
				for {
					if _, _, err := c.recv(maxCtlFrame); err != nil {
						return
					}
				}
			})
		}
		_ = c.send(jReceipt, []byte("the receipt"))
		lingerClose(c)
	})
	go func() {
		<-handled
		seller.Close() // the node's unwind: the host goes right after the handlers
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := buyer.Connect(ctx, peer.AddrInfo{ID: seller.ID(), Addrs: seller.Addrs()}); err != nil {
		t.Fatal(err)
	}
	st, err := buyer.NewStream(ctx, seller.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(st)
	if err := c.send(jHello, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the buyer is busy (paying the bill)
	select {
	case <-handled:
		// The frame and the close may still wait in yamux's send queue
		// when the host closes (they are sent asynchronously): lost.
		t.Fatal("the seller's handler returned, and its host closed, before the buyer read the last frame")
	default:
	}
	typ, b, err := c.recv(maxCtlFrame)
	if err != nil || typ != jReceipt || string(b) != "the receipt" {
		t.Fatalf("buyer read %d %q, %v; want the receipt", typ, b, err)
	}
	st.Close()
	select {
	case <-handled:
	case <-time.After(2 * jobLinger):
		t.Fatal("the seller's handler still lingers after the buyer closed its side")
	}
}
