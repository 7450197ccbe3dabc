//go:build linux

package platform

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// offloadState is what describeOffloads found.
type offloadState struct {
	vnetHdr bool // the kernel accepted IFF_VNET_HDR: segmentation offloads possible
	tcpGSO  bool // tx-tcp-segmentation / tx-tcp6-segmentation active on the interface
	udpGSO  bool // tx-udp-segmentation active (Linux 6.2+)
	batch   int  // packets per Read/Write
	err     error
}

func (o offloadState) String() string {
	if !o.vnetHdr {
		return fmt.Sprintf("GSO off, GRO off (the kernel refused the virtio-net header), %d packet per batch", o.batch)
	}
	if o.err != nil {
		return fmt.Sprintf("GSO/GRO on through the virtio-net header (features unreadable: %v), %d packets per batch", o.err, o.batch)
	}
	protos := func(tcp, udp bool) string {
		var p []string
		if tcp {
			p = append(p, "TCP")
		}
		if udp {
			p = append(p, "UDP")
		}
		if len(p) == 0 {
			return "off"
		}
		return "on (" + strings.Join(p, ", ") + ")"
	}
	// wireguard-go coalesces TCP whenever the header is on, and UDP when
	// the kernel took UDP segmentation offload.
	return fmt.Sprintf("GSO %s, GRO %s, %d packets per batch", protos(o.tcpGSO, o.udpGSO), protos(true, o.udpGSO), o.batch)
}

// describeOffloads reads the offloads of dev, the TUN named name, from its
// flags (TUNGETIFF) and the interface's features (ethtool).
func describeOffloads(dev tun.Device, name string) string {
	return readOffloads(dev, name).String()
}

func readOffloads(dev tun.Device, name string) offloadState {
	o := offloadState{batch: dev.BatchSize()}
	if f := dev.File(); f != nil {
		if sc, err := f.SyscallConn(); err == nil {
			sc.Control(func(fd uintptr) {
				ifr, err := unix.NewIfreq(name)
				if err == nil && unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) == nil {
					o.vnetHdr = ifr.Uint16()&unix.IFF_VNET_HDR != 0
				}
			})
		}
	}
	if !o.vnetHdr {
		return o
	}
	feats, err := ethtoolFeatures(name)
	if err != nil {
		o.err = err
		return o
	}
	o.tcpGSO = feats["tx-tcp-segmentation"] || feats["tx-tcp6-segmentation"]
	o.udpGSO = feats["tx-udp-segmentation"]
	return o
}

const ethSSFeatures = 4 // ETH_SS_FEATURES

// ethtoolIfreq is struct ifreq with ifr_data set.
type ethtoolIfreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolFeatures returns the active state of each of the interface's
// features by name, through the SIOCETHTOOL ioctl (what `ethtool -k` shows).
func ethtoolFeatures(name string) (map[string]bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	call := func(buf []byte) error {
		var ifr ethtoolIfreq
		copy(ifr.name[:unix.IFNAMSIZ-1], name)
		ifr.data = unsafe.Pointer(&buf[0])
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		if errno != 0 {
			return errno
		}
		return nil
	}
	ne := binary.NativeEndian

	// struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1]; }
	info := make([]byte, 20)
	ne.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	ne.PutUint64(info[8:], 1<<ethSSFeatures)
	if err := call(info); err != nil {
		return nil, fmt.Errorf("ethtool feature count of %s: %w", name, err)
	}
	if ne.Uint64(info[8:]) == 0 {
		return nil, fmt.Errorf("ethtool: %s reports no features", name)
	}
	n := int(ne.Uint32(info[16:]))
	if n <= 0 || n > 4096 {
		return nil, fmt.Errorf("ethtool: %s reports %d features", name, n)
	}

	// struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len*32]; }
	const strLen = 32 // ETH_GSTRING_LEN
	strs := make([]byte, 12+n*strLen)
	ne.PutUint32(strs[0:], unix.ETHTOOL_GSTRINGS)
	ne.PutUint32(strs[4:], ethSSFeatures)
	ne.PutUint32(strs[8:], uint32(n))
	if err := call(strs); err != nil {
		return nil, fmt.Errorf("ethtool feature names of %s: %w", name, err)
	}

	// struct ethtool_gfeatures { u32 cmd, size; struct { u32 available,
	// requested, active, never_changed; } features[size]; }
	blocks := (n + 31) / 32
	gf := make([]byte, 8+blocks*16)
	ne.PutUint32(gf[0:], unix.ETHTOOL_GFEATURES)
	ne.PutUint32(gf[4:], uint32(blocks))
	if err := call(gf); err != nil {
		return nil, fmt.Errorf("ethtool features of %s: %w", name, err)
	}
	feats := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		s := strs[12+i*strLen : 12+(i+1)*strLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		active := ne.Uint32(gf[8+(i/32)*16+8:])
		feats[string(s)] = active&(1<<(i%32)) != 0
	}
	return feats, nil
}
