// QuickCalls: when a store's cheapest file-system calls run on the event loop, and when they go back to the
// thread pool, and come back from it, by a clock the test moves.
import t from 'tap'
import { QuickCalls } from '../lib/fs-calls.js'

/** A clock that only moves when told to, and a call that takes `ms` by it. */
function clocked (): { quick: QuickCalls, advance: (ms: number) => void, call: (ms: number) => void } {
  let now = 1000
  const quick = new QuickCalls(() => now)
  return {
    quick,
    advance: (ms) => { now += ms },
    call: (ms) => { quick.run(() => { now += ms }) }
  }
}

t.test('one blocking call turns them off for 10 s, then they are tried again', async (t) => {
  const { quick, advance, call } = clocked()
  t.equal(quick.enabled, true)
  call(0.01)
  t.equal(quick.enabled, true, 'a quick call changes nothing')
  call(25)
  t.equal(quick.enabled, false, 'off after a call over 20 ms')
  advance(9_999)
  t.equal(quick.enabled, false, 'still off before 10 s')
  advance(1)
  t.equal(quick.enabled, true, 'on again after 10 s: a process descheduled for a while is not a slow file system')
})

t.test('slow again at once: off twice as long each time, up to 20 minutes', async (t) => {
  const { quick, advance, call } = clocked()
  const offFor: number[] = []
  for (let trip = 0; trip < 10; trip++) {
    call(25)
    let waited = 0
    while (!quick.enabled) {
      advance(1000)
      waited += 1000
    }
    offFor.push(waited / 1000)
  }
  t.same(offFor, [10, 20, 40, 80, 160, 320, 640, 1200, 1200, 1200])
})

t.test('a full window of quick calls after a retry starts the doubling over', async (t) => {
  const { quick, advance, call } = clocked()
  call(25)
  advance(10_000)
  call(25)
  advance(20_000)
  t.equal(quick.enabled, true)
  for (let index = 0; index < 1023; index++) call(0.01)
  call(25)
  advance(39_999)
  t.equal(quick.enabled, false, 'one call short of a full window: the next off period is still doubled')
  advance(1)
  t.equal(quick.enabled, true)
  for (let index = 0; index < 1024; index++) call(0.01)
  call(25)
  advance(10_000)
  t.equal(quick.enabled, true, 'after a full window: 10 s again')
})

t.test('16 slow calls (over 1 ms) in a window are allowed, the 17th turns them off; the count starts over each window', async (t) => {
  const { quick, call } = clocked()
  for (let index = 0; index < 16; index++) call(2)
  t.equal(quick.enabled, true)
  for (let index = 0; index < 1024 - 16; index++) call(0.01)
  for (let index = 0; index < 16; index++) call(2)
  t.equal(quick.enabled, true, 'a new window')
  call(2)
  t.equal(quick.enabled, false)
})

t.test('a call that throws is timed too', async (t) => {
  let now = 0
  const quick = new QuickCalls(() => now)
  t.throws(() => quick.run(() => { now += 25; throw new Error('EIO') }), /EIO/)
  t.equal(quick.enabled, false)
})
