--[[
  reactive-7: evaluate one event for one interested EventTrigger (SEMANTICS 5.2 step 4 and 6),
  atomically: the per-trigger seen mark, ensure / hold / read of the bucket, the bucket state
  machine, and the outbox record of every firing it decides.

  Input:
    KEYS[1] buckets   KEYS[2] ends   KEYS[3] satisfied   KEYS[4] seen   KEYS[5] outbox
    KEYS[6] held      KEYS[7] heldat
    ARGV[1]  event id
    ARGV[2]  event JSON (stored as the bucket's last event and the firing's triggering event)
    ARGV[3]  event occurred (us)
    ARGV[4]  wall clock now (us): seen marks, held marks, the firing's `triggered`
    ARGV[5]  bucketing key (JSON array)
    ARGV[6]  trigger flags, one character each, '1' or '0':
             reactive, has_after, immediate, holds_events, event_is_after, event_is_expected
    ARGV[7]  threshold
    ARGV[8]  within (us)
    ARGV[9]  preceding-event lookback (us): the backdated start of a first window
    ARGV[10] seed of deterministic firing ids (trigger id and state generation)
    ARGV[11] held-event horizon (us): max(2 x lookback, within)

  Output: { decision, bucket before, bucket after, firing record, ... }
    decision: 'duplicate' (this event was already evaluated for this trigger), 'ignored'
    (not expected, or nothing to evaluate), or the space-separated steps the state machine
    took ('armed', 'counted', 'too_early', 'fired', 'window_closed', 'rolled_over',
    'restarted', 'disarmed', 'held', 'unchanged')
    bucket before / after: the bucket of this bucketing key before and after this call, as
    'start|end|count' (us, us, events), or '' when there is none (decision records, explain)
    firing record: JSON {id, key, event, at, triggered, s, e, c} as written to the outbox
]]

--- @include "reactive_event.lua"

return react(KEYS, ARGV)
