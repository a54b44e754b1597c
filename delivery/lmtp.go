package delivery

// lmtpReplies reads the replies to the final dot over an LMTP session:
// one per accepted recipient, in the order of their RCPT TO (RFC 2033 sec
// 4.2), so each recipient gets its own outcome, delivered, deferred or
// bounced. ok are the positions in out of the accepted recipients. A
// reply that never came (lost connection, timeout) defers its recipient
// and those after it, and ends the session.
func (d *Scheduler) lmtpReplies(cn *conn, ok []int, out []result) {
	for k, i := range ok {
		out[i] = d.endOfData(cn)
		if cn.broken {
			for _, j := range ok[k+1:] {
				out[j] = out[i]
			}
			return
		}
	}
}
