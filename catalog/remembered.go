package catalog

import (
	"slices"
	"time"
)

// Grants remembered: the store keeps each researcher's grants between
// queries (a memo keyed by the researcher), so that a stream of queries
// does not read and decode them from the database on every admission.
//
// A new grant and a revocation forget every entry once they have
// returned, before their callers are answered, so a query admitted after
// a revocation was acknowledged sees it revoked. A charge that committed
// puts the charged grant in place of the one it was charged against, or,
// if the memo held another state of it (or a revoked one), drops the
// researcher's entry (chargedGrant). What the admission reads from the
// memo decides which grant answers, its liveness and its scope, the
// balance a dry run shows, and an exact answer's (which charges nothing)
// whole admission; the reservation of a charged query charges the
// admission's read only under a condition that the row still holds it
// (live, unrevoked, the same sums and totals), and otherwise reads it
// again under the transaction's lock, from which budget refusals are
// decided. Only a change by another process, which SQLite's one gateway
// does not have, could leave an entry stale, for at most grantTTL.

// grantTTL bounds how long a researcher's grants are trusted without
// reading them again.
const grantTTL = 5 * time.Second

// maxGrantEntries bounds the researchers remembered.
const maxGrantEntries = 10000

func newGrantMemo() *memo[[]Grant] { return newMemo(grantTTL, maxGrantEntries, cloneGrants) }

// chargedGrant records a committed charge: after is the grant charged
// against before.
func (s *Store) chargedGrant(before, after Grant) {
	s.grants.update(after.Researcher, func(gs *[]Grant) bool {
		i := slices.IndexFunc(*gs, func(g Grant) bool { return g.ID == after.ID })
		if i < 0 || (*gs)[i].Spent != before.Spent || (*gs)[i].RevokedAt != nil {
			return false
		}
		(*gs)[i] = cloneGrant(after)
		return true
	})
}

func cloneGrants(gs []Grant) []Grant {
	out := make([]Grant, len(gs))
	for i, g := range gs {
		out[i] = cloneGrant(g)
	}
	return out
}

// cloneGrant copies what a grant shares: its lists and its revocation.
func cloneGrant(g Grant) Grant {
	g.Datasets, g.Columns = slices.Clone(g.Datasets), slices.Clone(g.Columns)
	if g.RevokedAt != nil {
		t := *g.RevokedAt
		g.RevokedAt = &t
	}
	return g
}

// Datasets remembered: the store keeps each dataset's row, decoded,
// between a researcher's queries (a memo keyed by the researcher and the
// name, so that one researcher's speed does not tell whether another
// read the dataset lately). Every change to a dataset
// (a registration or reload, a protection change proposed or verified)
// forgets every entry once it has returned, before its caller is
// answered, so a query admitted after a steward's change was accepted
// reads the new grade and policy.

// datasetTTL bounds how long a dataset's row is trusted without reading
// it again.
const datasetTTL = 5 * time.Second

// maxDatasetEntries bounds the (researcher, dataset) pairs remembered.
const maxDatasetEntries = 10000

func newDatasetMemo() *memo[Dataset] {
	return newMemo(datasetTTL, maxDatasetEntries, func(d Dataset) Dataset {
		d.Policy = d.Policy.Clone()
		return d
	})
}
