package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/weft-net/weft"
)

// checkDHT runs `weft dht`, `weft dht records` and `weft dht lookup` on
// the member of a running two-node network, in text and JSON.
func checkDHT(t *testing.T, n twoNodes) {
	r := mustWeft(t, "dht", "--state", n.stateB)
	for _, want := range []string{"role      server", "BUCKET", "alpha", "records"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("weft dht: want %q in:\n%v", want, r)
		}
	}
	r = mustWeft(t, "dht", "--json", "--state", n.stateB)
	var st weft.DHTStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Role != weft.DHTRoleServer || len(st.Contacts) != 1 || st.Contacts[0].Name != "alpha" {
		t.Errorf("weft dht --json: %+v, %v\n%v", st, err, r)
	}
	r = mustWeft(t, "dht", "records", "--state", n.stateB)
	if !strings.Contains(r.stdout, "KIND") || !strings.Contains(r.stdout, "beta") || !strings.Contains(r.stdout, "name") {
		t.Errorf("weft dht records:\n%v", r)
	}
	r = mustWeft(t, "dht", "lookup", "alpha", "--json", "--state", n.stateB)
	var res weft.LookupResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Record == nil || res.Record.Name != "alpha" {
		t.Errorf("weft dht lookup alpha --json: %+v, %v\n%v", res, err, r)
	}
	r = mustWeft(t, "dht", "lookup", "alpha", "--state", n.stateB)
	if !strings.Contains(r.stdout, "found     alpha") || !strings.Contains(r.stdout, "FIND_VALUE") {
		t.Errorf("weft dht lookup alpha:\n%v", r)
	}
	r = runWeft(t, "", "dht", "lookup", "nosuchnode", "--state", n.stateB)
	if r.code != 1 || !strings.Contains(r.stdout, "not found") || !strings.Contains(r.stderr, "no such node") {
		t.Errorf("weft dht lookup nosuchnode: want exit 1 and not found:\n%v", r)
	}
	r = runWeft(t, "", "dht", "bogus", "--state", n.stateB)
	if r.code != 2 {
		t.Errorf("weft dht bogus: want exit 2:\n%v", r)
	}
}
