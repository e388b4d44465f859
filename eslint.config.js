import neostandard from 'neostandard'
import importX from 'eslint-plugin-import-x'
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript'

// The layers of lib/, bottom to top (ARCHITECTURE.md): each may import only from the layers below it.
const LEAVES = ['lib/errors.ts', 'lib/types.ts', 'lib/ids.ts', 'lib/metadata.ts', 'lib/known-keys.ts', 'lib/each-concurrently.ts', 'lib/fs-calls.ts', 'lib/store/types.ts', 'lib/ietf/versions.ts']
const SERVICES = ['lib/store', 'lib/lockers', 'lib/observe']
const TOP = ['lib/index.ts', 'lib/options.ts', 'lib/cli.ts', 'lib/cli-hooks.ts', 'lib/cli-env.ts', 'lib/cli-health.ts', 'lib/cli-scale.ts', 'lib/cors.ts']
const DRAFT = { path: 'lib/ietf', except: ['./versions.ts'] }
const above = {
  leaves: ['lib/store/file-store.ts', 'lib/store/s3-store.ts', 'lib/lockers', 'lib/observe', 'lib/core', 'lib/wire', 'lib/tus', 'lib/http', ...TOP],
  services: ['lib/core', 'lib/wire', 'lib/tus', 'lib/ietf', 'lib/http', ...TOP],
  core: ['lib/wire', 'lib/tus', 'lib/ietf', 'lib/http', ...TOP],
  wire: ['lib/tus', 'lib/ietf', 'lib/http', ...TOP],
  http: TOP
}

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'coverage/**', 'example/uploads/**', 'bench/results/**', 'bench/data/**'] }),
  // `void promise` marks a promise deliberately not awaited (Fastify's reply.send in an error handler).
  { rules: { 'no-void': ['error', { allowAsStatement: true }] } },
  { files: ['example/public/**/*.js'], languageOptions: { globals: { location: 'readonly' } } },
  {
    files: ['lib/**/*.ts'],
    plugins: { 'import-x': importX },
    // Resolves `./x.js` to `./x.ts` as tsc does, so the layer and cycle rules see every import.
    settings: { 'import-x/resolver-next': [createTypeScriptImportResolver()] },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-restricted-paths': ['error', {
        zones: [
          ...LEAVES.flatMap((target) => [
            { target, from: above.leaves, message: 'the bottom layer imports nothing of the plugin' },
            { target, from: DRAFT.path, except: DRAFT.except, message: 'the bottom layer imports nothing of the plugin' }
          ]),
          ...SERVICES.map((target) => ({ target, from: above.services, message: 'stores, lockers and observers know nothing of the operations or protocols' })),
          { target: 'lib/core', from: above.core, message: 'the core knows no protocol and no route' },
          { target: 'lib/wire', from: above.wire, message: 'what both protocols share knows neither' },
          { target: 'lib/tus', from: ['lib/http', ...TOP], message: 'the tus dialect is below the routes' },
          { target: 'lib/tus', from: DRAFT.path, except: DRAFT.except, message: 'tus and the draft never import each other' },
          { target: 'lib/ietf', from: ['lib/tus', 'lib/http', ...TOP], message: 'tus and the draft never import each other' },
          { target: 'lib/http', from: above.http, message: 'the routes are below index, options and the CLI' }
        ]
      }]
    }
  }
]
