// Package wal is a group-committed, append-only record log: the journal
// the queue writes a message to, and fdatasyncs, before it answers 250,
// so that the session waits for one short sequential write instead of a
// bbolt commit (docs/architecture.md).
//
// # Guarantee
//
// When Append returns a Seq without error, the record and every record
// with a lower Seq are on disk (written and fdatasync'd). After a crash at
// any moment (SIGKILL, power loss), Open returns every such record with
// Seq greater than the applied Seq it is given, in order, with its data
// intact. A record that was written but whose Append never returned (a
// crash during the fdatasync, or a write or fdatasync that failed) may be
// returned too: its caller saw no success and may have sent it again (a
// duplicate, never a loss). This holds as long as the caller gives Open
// an applied Seq no lower than the highest it released (Caveats).
//
// # Format
//
// The file has a fixed size, a multiple of 8 KiB, split in two halves used
// in turn. It is written with zeros when created, so that appends only
// overwrite allocated blocks and an fdatasync flushes data, not file
// system metadata. A half holds records packed back to back from its
// first byte. Each record is a header of 20 bytes followed by its data:
//
//	0   magic 'w', format version 1
//	2   two zero bytes
//	4   length of the data, uint32 little-endian
//	8   Seq, uint64 little-endian
//	16  CRC, uint32 little-endian
//
// The CRC is CRC-32C (Castagnoli) over bytes 0-15 and the data,
// continued from the CRC of the record before in the half (started from
// 0 for a half's first record): a record is valid only right after the
// record it was written after.
//
// Seqs start at 1 and grow by one per record. A half's chain starts at
// its first byte and runs while records are valid (magic, a length that
// fits in the half, the CRC) and each Seq is the one before plus one;
// zeros, a torn write, a record of an earlier lap or the rest of a torn
// batch ends it, and so would a record that a message's data holds,
// whatever Seq it claims. Writing
// switches to the other half when a record does not fit in the rest of
// the current one and every record in the other half has been released;
// it then starts at the other half's first byte with higher Seqs than any
// record left behind there, so no stale record can continue a chain.
//
// # Caveats
//
// The caller must Release only records whose effect is durable elsewhere,
// and give Open the highest Seq so applied: a half is reused once its
// records are released. A batch that spans a switch is written and
// fdatasync'd half by half, so that a record in the new half is never on
// disk without the ones before it in the old half (else a crash could
// leave a false gap). After a failed write or fdatasync the Log refuses
// further appends (the state of the disk is unknown); open it again. A
// Log holds an exclusive flock on its file; a file is made under the
// name path.tmp and renamed into place whole.
package wal
