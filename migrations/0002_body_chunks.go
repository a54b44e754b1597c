package migrations

import bolt "go.etcd.io/bbolt"

// Frozen with schema 2: bodies are stored in chunks (bucket body,
// id ‖ big-endian uint32 sequence -> a nested bucket whose one value,
// under key 0x00, is at most 256 KiB of content) instead of one value
// under the ID, and a body being received is written chunk
// by chunk before its message is enqueued, listed meanwhile in bucket
// spool (id -> empty) so that a crash's leftovers are found and removed
// at open. Schema-1 bodies (one value under the ID) stay as they are and
// are still read; the version step keeps a schema-1 binary, which cannot
// read chunks, from opening the file.
const spoolBucket = "spool"

func init() {
	Default.Register(Step{Version: 2, Name: "body chunks and spool", Apply: bodyChunks})
}

func bodyChunks(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists([]byte(spoolBucket))
	return err
}
