package sandbox

import "strings"

// Flat is Base taken apart, so that privacy can aggregate the base's rows
// in the SELECT that reads them instead of over a CTE of Base. For DuckDB
// that is the same query (it inlines the CTE) less a projection of every
// row that reaches the aggregate: about 0.15 ms per million rows scanned,
// which is most of what separates a small count over patients from raw
// DuckDB.
type Flat struct {
	// Exprs maps each of Base's columns (__pu, __g0.., __a0..) to its
	// expression as DuckDB printed it in Base.
	Exprs map[string]string
	// From is the rest of Base after its select list: its FROM clause
	// and its WHERE clause, from "FROM".
	From string
}

// flatten splits base, the text DuckDB printed for a SELECT of the
// expressions named names (as "expr AS name, ..."), into those expressions
// and the FROM clause onwards. The split is certain only where every
// delimiter, " AS name, " or, for the last, " AS name FROM ", occurs in the
// text exactly once, overlapping occurrences counted: DuckDB always prints
// the real ones, so a delimiter found once is the real one, whatever
// string constants the query holds.
// A text where any occurs more than once (or not at all) has no flat form,
// and privacy keeps the CTE.
func flatten(base string, names []string) *Flat {
	const lead = "SELECT "
	if !strings.HasPrefix(base, lead) || len(names) == 0 {
		return nil
	}
	f := &Flat{Exprs: make(map[string]string, len(names))}
	at := len(lead)
	for i, name := range names {
		delim := " AS " + name + ", "
		if i == len(names)-1 {
			delim = " AS " + name + " FROM "
		}
		if occurrences(base, delim) != 1 {
			return nil
		}
		end := strings.Index(base, delim)
		if end < at {
			return nil
		}
		expr := base[at:end]
		if expr == "" {
			return nil
		}
		f.Exprs[name] = expr
		at = end + len(delim)
	}
	f.From = "FROM " + base[at:]
	return f
}

// occurrences counts where sub occurs in s, overlapping ones included
// (strings.Count skips those, and a delimiter that begins and ends with a
// space could overlap another by that space).
func occurrences(s, sub string) int {
	n := 0
	for i := strings.Index(s, sub); i >= 0; {
		n++
		j := strings.Index(s[i+1:], sub)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return n
}

// aliases are the names of sel's select list, in order.
func aliases(sel node) []string {
	var names []string
	for _, item := range nodes(sel, "select_list") {
		names = append(names, str(item, "alias"))
	}
	return names
}
