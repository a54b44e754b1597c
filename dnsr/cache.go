package dnsr

import (
	"sync"
	"time"
)

// cache keeps answers until their TTL runs out. It holds at most size
// entries: when full, expired entries are dropped, then arbitrary ones.
type cache struct {
	mu     sync.Mutex
	m      map[string]entry
	size   int
	maxTTL time.Duration
	now    func() time.Time
}

type entry struct {
	a       answer
	expires time.Time
}

func newCache(size int, maxTTL time.Duration, now func() time.Time) *cache {
	return &cache{m: make(map[string]entry), size: size, maxTTL: maxTTL, now: now}
}

func (c *cache) get(key string) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return answer{}, false
	}
	if !c.now().Before(e.expires) {
		delete(c.m, key)
		return answer{}, false
	}
	return e.a, true
}

// put stores an answer for its TTL; an answer with no TTL is not kept.
func (c *cache) put(key string, a answer) {
	ttl := min(a.ttl, c.maxTTL)
	if ttl <= 0 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.size {
		c.evict(now)
	}
	c.m[key] = entry{a: a, expires: now.Add(ttl)}
}

// evict drops the expired entries, then as many others as needed to make
// room for a tenth of the cache.
func (c *cache) evict(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) < c.size-c.size/10 {
			break
		}
		delete(c.m, k)
	}
}
