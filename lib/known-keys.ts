import { TusErrors } from './errors.js'

/**
 * Refuses an options object with a key `owner` does not know (FST_TUS_INVALID_OPTION naming the key): a misspelt
 * limit or hook (`maxsize`, `onUploadCreated`) was ignored, so what the app meant was silently off. `elsewhere` tells
 * where a key that belongs to another object goes (a store's option given to the plugin, a name of another server);
 * otherwise the nearest known key, when one is near, is suggested.
 */
export function refuseUnknownKeys (
  owner: string, options: object, known: readonly string[], elsewhere: Readonly<Record<string, string>> = {}
): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue
    const near = nearestName(key, known)
    const hint = Object.hasOwn(elsewhere, key) ? elsewhere[key] : near === undefined ? undefined : `did you mean ${JSON.stringify(near)}?`
    throw new TusErrors.INVALID_OPTION(`${owner} has no option ${JSON.stringify(key)}${hint === undefined ? '' : ` (${hint})`}`)
  }
}

/** The known name nearest to `key`, when one is near enough to be what was meant. */
export function nearestName (key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  let best: { name: string, distance: number } | undefined
  for (const name of known) {
    const distance = editDistance(lower, name.toLowerCase())
    if (best === undefined || distance < best.distance) best = { name, distance }
  }
  // Near: a case slip, or a few letters off for a name long enough that this is no coincidence.
  if (best === undefined || best.distance > Math.min(3, Math.max(2, Math.floor(best.name.length / 3)))) return undefined
  return best.name
}

/** Levenshtein distance, a transposition of two neighbours counted as one edit (optimal string alignment). */
function editDistance (a: string, b: string): number {
  const width = b.length + 1
  const d = new Array<number>((a.length + 1) * width).fill(0)
  const at = (i: number, j: number): number => d[i * width + j] ?? 0
  for (let i = 0; i <= a.length; i++) d[i * width] = i
  for (let j = 0; j <= b.length; j++) d[j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1)
      d[i * width + j] = best
    }
  }
  return at(a.length, b.length)
}
