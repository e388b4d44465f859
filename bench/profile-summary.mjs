// Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by package/file.
// Usage: node bench/profile-summary.mjs <file.cpuprofile> [top]
import { readFileSync } from 'node:fs'

const [file, topArg] = process.argv.slice(2)
if (file === undefined) throw new Error('usage: profile-summary.mjs <file.cpuprofile> [top]')
const top = Number(topArg ?? 30)
const profile = JSON.parse(readFileSync(file, 'utf8'))
const byId = new Map(profile.nodes.map((node) => [node.id, node]))
const self = new Map()
for (let index = 0; index < profile.samples.length; index++) {
  const id = profile.samples[index]
  self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0))
}
const total = [...self.values()].reduce((sum, value) => sum + value, 0)
const byFunction = new Map()
const byFile = new Map()
for (const [id, time] of self) {
  const { callFrame } = byId.get(id)
  const where = callFrame.url.replace(/^file:\/\//, '').replace(/.*node_modules\//, '')
  const name = `${callFrame.functionName || '(anonymous)'} ${where}:${callFrame.lineNumber + 1}`
  byFunction.set(name, (byFunction.get(name) ?? 0) + time)
  const group = where === '' ? callFrame.functionName : where.startsWith('node:') ? where : where.split('/').slice(0, where.startsWith('@') ? 2 : 1).join('/') + (where.includes('/dist/') && !where.includes('node_modules') ? '' : '')
  byFile.set(group, (byFile.get(group) ?? 0) + time)
}
const print = (title, map) => {
  console.log(`\n${title} (total ${(total / 1000).toFixed(0)} ms)`)
  for (const [name, time] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${(100 * time / total).toFixed(1).padStart(5)}%  ${name}`)
  }
}
print('self time by function', byFunction)
print('self time by file', byFile)
