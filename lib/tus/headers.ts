export const TUS_VERSION = '1.0.0'
export const OCTET_STREAM = 'application/offset+octet-stream'
export const EXTENSIONS = [
  'creation', 'creation-with-upload', 'creation-defer-length', 'termination', 'expiration',
  'checksum', 'checksum-trailer', 'concatenation', 'concatenation-unfinished'
]
