package migrations

import bolt "go.etcd.io/bbolt"

// Frozen with schema 2: a body larger than 256 KiB is stored in chunks
// (bucket body, id ‖ big-endian uint32 sequence -> a nested bucket whose
// one value, under key 0x00, is 256 KiB of content) instead of one value
// under the ID, which smaller bodies stay; a body being received is
// written chunk by chunk before its message is enqueued, listed
// meanwhile in bucket spool (id -> empty) so that a crash's leftovers
// are found and removed at open. Schema-1 bodies need no change; the
// version step keeps a schema-1 binary, which cannot read chunks, from
// opening the file.
const spoolBucket = "spool"

func init() {
	Default.Register(Step{Version: 2, Name: "body chunks and spool", Apply: bodyChunks})
}

func bodyChunks(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists([]byte(spoolBucket))
	return err
}
