package node

import "github.com/blackbox-market/blackbox/pkg/payment"

var _ payment.CheckedStore = (*feeStore)(nil)

// PutChannelChecked implements payment.CheckedStore: through to the store
// under it when that is one (the node's: the seller's signature check of
// an update overlaps the payment log's write), else check, then
// PutChannel.
func (f *feeStore) PutChannelChecked(c *payment.Channel, check func() error) error {
	cs, ok := f.ChannelStore.(payment.CheckedStore)
	if !ok {
		if err := check(); err != nil {
			return err
		}
		return f.PutChannel(c)
	}
	if err := cs.PutChannelChecked(c, check); err != nil {
		return err
	}
	f.noted(c)
	return nil
}
