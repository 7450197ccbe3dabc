// Package dns will hold weft's overlay DNS server (github.com/miekg/dns):
// NAME.<domain> and <nodeid>.id.<domain> answered from verified node
// records, everything else forwarded upstream. It is empty until the kernel
// TUN and DNS issue fills it; in userspace mode the node resolves overlay
// names itself (weft.Node.Resolve, used by Dial and the proxies).
package dns
