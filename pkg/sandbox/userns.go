package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"
)

// remapMu serialises building the shared, remapped parent snapshot of an
// image (two jobs of one image starting together would race on it); a
// daemon sharing the containerd may still build it at the same time: the
// second commit finds it made.
var remapMu sync.Mutex

// withRemappedSnapshotLabelled is containerd.WithRemappedSnapshot with
// labels on the job's snapshot: the image's root file system is chowned once
// by uid into a committed parent snapshot "<chainID>-<uid>-<uid>", and each
// job gets a writable child of it.
func withRemappedSnapshotLabelled(id string, img containerd.Image, uid uint32, labels map[string]string) containerd.NewContainerOpts {
	return func(ctx context.Context, client *containerd.Client, c *containers.Container) error {
		diffIDs, err := img.RootFS(ctx)
		if err != nil {
			return err
		}
		parent := identity.ChainID(diffIDs).String()
		remapped := fmt.Sprintf("%s-%d-%d", parent, uid, uid)
		sn := client.SnapshotService(c.Snapshotter)
		remapMu.Lock()
		if _, err := sn.Stat(ctx, remapped); errdefs.IsNotFound(err) {
			tmp := remapped + "-remap-" + newID()
			mounts, err := sn.Prepare(ctx, tmp, parent)
			if err != nil {
				remapMu.Unlock()
				return err
			}
			err = mount.WithTempMount(ctx, mounts, func(root string) error {
				return filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
					if err != nil {
						return err
					}
					st := info.Sys().(*syscall.Stat_t)
					// Lchown: never follow a symlink out to a host file.
					return os.Lchown(p, int(st.Uid+uid), int(st.Gid+uid))
				})
			})
			if err == nil {
				err = sn.Commit(ctx, remapped, tmp)
				if errdefs.IsAlreadyExists(err) {
					// Another process on this containerd (a second
					// daemon) built the same snapshot meanwhile.
					sn.Remove(ctx, tmp)
					err = nil
				}
			}
			if err == nil {
				// The image record references the remapped snapshot, so that
				// the garbage collector keeps it as long as the image, and
				// collects it with the image.
				key := "containerd.io/gc.ref.snapshot." + c.Snapshotter + "/userns-" + fmt.Sprint(uid)
				_, err = client.ImageService().Update(ctx, images.Image{Name: img.Name(), Labels: map[string]string{key: remapped}}, "labels."+key)
			}
			if err != nil {
				sn.Remove(ctx, tmp)
				remapMu.Unlock()
				return fmt.Errorf("remap image root to uid %d: %w", uid, err)
			}
		} else if err != nil {
			remapMu.Unlock()
			return err
		}
		remapMu.Unlock()
		if _, err := sn.Prepare(ctx, id, remapped, snapshots.WithLabels(labels)); err != nil {
			return err
		}
		c.SnapshotKey = id
		c.Image = img.Name()
		return nil
	}
}
