/* A small JSON reader for the golden manifest: objects, arrays, strings
 * (escapes \" \\ \/ \n \t; \u is kept verbatim), numbers, true/false/null.
 * The whole document is one allocation tree, freed by vj_free. */
#ifndef DITATTN_VERIFY_VJSON_H
#define DITATTN_VERIFY_VJSON_H

#include <stddef.h>

typedef enum vj_type { VJ_NULL, VJ_BOOL, VJ_NUMBER, VJ_STRING, VJ_ARRAY, VJ_OBJECT } vj_type;

typedef struct vj {
  vj_type type;
  double number;    /* VJ_NUMBER, VJ_BOOL (0/1) */
  char *string;     /* VJ_STRING */
  char *key;        /* member name when inside an object */
  struct vj *items; /* VJ_ARRAY / VJ_OBJECT: count children */
  size_t count;
} vj;

/* Parses text[0..len); NULL (with a message in err) on malformed input. */
vj *vj_parse(const char *text, size_t len, char *err, size_t err_size);
void vj_free(vj *v);
/* Member of an object, or NULL. */
const vj *vj_get(const vj *obj, const char *key);
/* String member or NULL. */
const char *vj_str(const vj *obj, const char *key);

#endif
