package migrations

import bolt "go.etcd.io/bbolt"

// Frozen with schema 1: the buckets of the first queue layout.
var initialBuckets = []string{
	"meta",    // schema, counters, policy fingerprint
	"msg",     // id -> envelope record
	"body",    // id -> message content
	"due",     // unix-nanos || id -> empty: the schedule
	"flush",   // reversed domain || 0x00 || id -> empty: fast-flush index
	"hold",    // id -> empty: messages on hold
	"active",  // id -> empty: leased messages, returned at open after a crash
	"dest",    // destination -> state (dead until, last flush)
	"corrupt", // id + "/msg" or "/body" -> undecodable record moved aside
}

func init() {
	Default.Register(Step{Version: 1, Name: "initial", Apply: initial})
}

func initial(tx *bolt.Tx) error {
	for _, name := range initialBuckets {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return err
		}
	}
	return nil
}
