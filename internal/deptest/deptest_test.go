// Package deptest holds the test that keeps weft's imports flowing one way:
// cmd → weft → {tunnel, netstack, platform, dns} → {nat, dht} → trust → addr.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/weft-net/weft"

// layer gives each package its level; a package may import only packages of a
// strictly lower level (siblings on one level may not import each other).
var layer = map[string]int{
	"addr":     0,
	"trust":    1,
	"nat":      2,
	"dht":      2,
	"tunnel":   3,
	"netstack": 3,
	"platform": 3,
	"dns":      3,
	"":         4, // package weft, the module root
	"cmd/weft": 5,
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := rel(fields[0])
		from, ok := layerOf(pkg)
		if !ok {
			continue // internal/, bench/ and the like sit outside the ladder
		}
		checked++
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if top(rel(imp)) == top(pkg) && pkg != "" {
				continue // within one package tree, e.g. dht/dhttest → dht
			}
			to, ok := layerOf(rel(imp))
			if !ok {
				if strings.HasPrefix(rel(imp), "internal/") && from >= layer[""] {
					continue
				}
				t.Errorf("%s imports %s, which is outside the layer ladder", fields[0], imp)
				continue
			}
			if to >= from {
				t.Errorf("%s (level %d) imports %s (level %d): imports must go to a lower level (DESIGN.md)", fields[0], from, imp, to)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d packages checked; is the module path right?", checked)
	}
}

// narrower holds packages whose imports are narrower than their level
// allows: the module packages they may import, and whether third-party
// modules other than golang.org/x/crypto are allowed. A rule covers the
// package's sub-packages too, unless one has a rule of its own. dht reaches
// trust only through its injected Validator; addr and trust stay pure so
// that every other layer (and the simulator) can use them;
// nat/internal/pionlog, the slog adapter nat and nat/ice hand pion, is a
// leaf.
var narrower = map[string]importRule{
	"addr":                 {},
	"trust":                {weft: []string{"addr"}},
	"dht":                  {weft: []string{"addr", "dht"}},
	"nat/internal/pionlog": {thirdParty: true},
}

func TestNarrowImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		rule, ok := narrowRule(rel(fields[0]))
		if !ok {
			continue
		}
	imports:
		for _, imp := range fields[1:] {
			switch {
			case strings.HasPrefix(imp, module+"/"):
				for _, w := range rule.weft {
					if top(rel(imp)) == w {
						continue imports
					}
				}
				t.Errorf("%s imports %s; it may import only %v of weft", fields[0], imp, rule.weft)
			case strings.HasPrefix(imp, "golang.org/x/crypto/"), !strings.Contains(strings.SplitN(imp, "/", 2)[0], "."):
			default:
				if !rule.thirdParty {
					t.Errorf("%s imports third-party %s; it may use only the standard library and x/crypto", fields[0], imp)
				}
			}
		}
	}
}

// importRule is what a package of narrower may import: the weft packages
// (by their path in the module, sub-packages included), and whether
// third-party modules other than golang.org/x/crypto.
type importRule struct {
	weft       []string
	thirdParty bool
}

// narrowRule finds p's rule in narrower, or its nearest parent's.
func narrowRule(p string) (importRule, bool) {
	for {
		if rule, ok := narrower[p]; ok {
			return rule, true
		}
		i := strings.LastIndex(p, "/")
		if i < 0 {
			return importRule{}, false
		}
		p = p[:i]
	}
}

func top(p string) string {
	if p == "cmd/weft" || strings.HasPrefix(p, "cmd/weft/") {
		return "cmd/weft"
	}
	if i := strings.Index(p, "/"); i >= 0 {
		return p[:i]
	}
	return p
}

func rel(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
}

// layerOf maps a package to its level; sub-packages inherit their parent's.
func layerOf(p string) (int, bool) {
	for {
		if l, ok := layer[p]; ok {
			return l, true
		}
		i := strings.LastIndex(p, "/")
		if i < 0 {
			return 0, false
		}
		p = p[:i]
	}
}
