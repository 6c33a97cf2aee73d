package policy_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/hospital/gateway/policy"
)

func TestCloneSharesNothing(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	p := policy.Policy{K: 10, Tables: []policy.Table{{Name: "patients", OneRowPerUnit: true, Columns: []policy.Column{
		{Name: "sex", Type: "VARCHAR", Role: policy.Attribute, Public: []string{"F", "M"}},
		{Name: "age", Type: "INTEGER", Role: policy.Attribute, Min: f(0), Max: f(100), DomainMin: f(0), DomainMax: f(130)},
	}}}}
	before, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Clone()
	if !reflect.DeepEqual(c, p) {
		t.Fatalf("clone differs: %+v", c)
	}
	c.Tables[0].Name = "x"
	for j := range c.Tables[0].Columns {
		col := &c.Tables[0].Columns[j]
		col.Name = "x"
		for k := range col.Public {
			col.Public[k] = "x"
		}
		for _, v := range []*float64{col.Min, col.Max, col.DomainMin, col.DomainMax} {
			if v != nil {
				*v = -1
			}
		}
	}
	after, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatalf("changing the clone changed the original:\n%s\n%s", before, after)
	}
}

// TestCloneKnowsEveryReference fails when a policy type gains a field
// that refers to shared memory, which Clone must then copy.
func TestCloneKnowsEveryReference(t *testing.T) {
	known := map[string]bool{"Policy.Tables": true, "Table.Columns": true, "Column.Public": true,
		"Column.Min": true, "Column.Max": true, "Column.DomainMin": true, "Column.DomainMax": true}
	for _, typ := range []reflect.Type{reflect.TypeOf(policy.Policy{}), reflect.TypeOf(policy.Table{}), reflect.TypeOf(policy.Column{}), reflect.TypeOf(policy.Contribution{})} {
		for i := 0; i < typ.NumField(); i++ {
			fld := typ.Field(i)
			switch fld.Type.Kind() {
			case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface, reflect.Chan, reflect.Func:
				if name := typ.Name() + "." + fld.Name; !known[name] {
					t.Errorf("%s refers to shared memory: copy it in Clone and list it here", name)
				}
			}
		}
	}
}
