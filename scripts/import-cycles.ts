// Fails when the modules of lib/ import each other in a cycle, type-only imports included (eslint's
// import-x/no-cycle skips those, and a type cycle still ties the layers of ARCHITECTURE.md together).
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'

const root = resolve(import.meta.dirname, '..', 'lib')
const IMPORT = /^\s*(?:import|export)\b[^'"]*?\bfrom\s+'(\.{1,2}\/[^']+)'/gm

async function modules (directory: string): Promise<string[]> {
  const entries = await readdir(directory, { withFileTypes: true })
  const nested = await Promise.all(entries.map(async (entry) => {
    const path = join(directory, entry.name)
    if (entry.isDirectory()) return await modules(path)
    return entry.name.endsWith('.ts') ? [path] : []
  }))
  return nested.flat()
}

const graph = new Map<string, string[]>()
for (const file of await modules(root)) {
  const source = await readFile(file, 'utf8')
  graph.set(file, [...source.matchAll(IMPORT)].map((match) => resolve(dirname(file), match[1]!.replace(/\.js$/, '.ts'))))
}

const cycles: string[] = []
const state = new Map<string, 'visiting' | 'done'>()
function visit (file: string, path: string[]): void {
  if (state.get(file) === 'done') return
  if (state.get(file) === 'visiting') {
    cycles.push([...path.slice(path.indexOf(file)), file].map((item) => relative(root, item)).join(' -> '))
    return
  }
  state.set(file, 'visiting')
  for (const next of graph.get(file) ?? []) visit(next, [...path, file])
  state.set(file, 'done')
}
for (const file of graph.keys()) visit(file, [])

if (cycles.length > 0) {
  console.error(`import cycles in lib/ (type-only imports count):\n${cycles.map((cycle) => `  ${cycle}`).join('\n')}`)
  process.exit(1)
}
console.log(`no import cycles among the ${graph.size} modules of lib/`)
