import type { FastifyInstance } from 'fastify'

/** How the app's router reads a path: what a request's path must be to reach a route. */
export interface PathMatching {
  caseSensitive: boolean
  ignoreTrailingSlash: boolean
  ignoreDuplicateSlashes: boolean
  useSemicolonDelimiter: boolean
  allowUnsafeRegex: boolean
  maxParamLength: number
}

/**
 * The app's path matching, resolved as Fastify resolves it: `routerOptions` first (Fastify 5; the top-level
 * settings are deprecated), then the top-level setting, then Fastify's default.
 */
export function pathMatchingOf (app: FastifyInstance): PathMatching {
  const config = app.initialConfig
  // Fastify's schema and router take `useSemicolonDelimiter` in `routerOptions`; its types (find-my-way's) omit it.
  const router: (typeof config.routerOptions & { useSemicolonDelimiter?: boolean }) | undefined = config.routerOptions
  return {
    caseSensitive: router?.caseSensitive ?? config.caseSensitive ?? true,
    ignoreTrailingSlash: router?.ignoreTrailingSlash ?? config.ignoreTrailingSlash ?? false,
    ignoreDuplicateSlashes: router?.ignoreDuplicateSlashes ?? config.ignoreDuplicateSlashes ?? false,
    useSemicolonDelimiter: router?.useSemicolonDelimiter ?? config.useSemicolonDelimiter ?? false,
    allowUnsafeRegex: router?.allowUnsafeRegex ?? config.allowUnsafeRegex ?? false,
    maxParamLength: router?.maxParamLength ?? config.maxParamLength ?? 100
  }
}
