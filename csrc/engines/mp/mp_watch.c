/* mp_watch.c - the watchdog of mp_watch.h. One thread per communicator; it
 * sleeps on a condition variable (CLOCK_MONOTONIC) until armed, then until
 * the deadline or a disarm. on_fire runs on the watchdog thread, outside
 * the lock, while the rank's own thread is still blocked in its call. */
#include "engines/mp/mp_watch.h"

#include <errno.h>
#include <time.h>

#include "util/clock.h"

static void* watch_main(void* vw) {
  jmg_mp_watch* w = vw;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    if (!w->armed || w->fired) {
      pthread_cond_wait(&w->cv, &w->mu);
      continue;
    }
    if (jmg_clock_now() < w->deadline) {
      struct timespec at = jmg_clock_at(w->deadline);
      pthread_cond_timedwait(&w->cv, &w->mu, &at);
      continue;
    }
    w->fired = w->firing = 1;
    void (*fire)(void*) = w->on_fire;
    void* arg = w->arg;
    pthread_mutex_unlock(&w->mu);
    if (fire) fire(arg);
    pthread_mutex_lock(&w->mu);
    w->firing = 0;
    pthread_cond_broadcast(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int jmg_mp_watch_start(jmg_mp_watch* w) {
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) != 0) return -1;
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc != 0) return -1;
  if (pthread_mutex_init(&w->mu, NULL) != 0) {
    pthread_cond_destroy(&w->cv);
    return -1;
  }
  w->stop = w->armed = w->fired = w->firing = 0;
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return -1;
  }
  w->running = 1;
  return 0;
}

void jmg_mp_watch_stop(jmg_mp_watch* w) {
  if (!w->running) return;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  w->running = 0;
}

void jmg_mp_watch_arm(jmg_mp_watch* w, double timeout_s, void (*on_fire)(void*), void* arg) {
  pthread_mutex_lock(&w->mu);
  w->deadline = jmg_clock_now() + timeout_s;
  w->on_fire = on_fire;
  w->arg = arg;
  w->fired = 0;
  w->armed = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

int jmg_mp_watch_disarm(jmg_mp_watch* w) {
  pthread_mutex_lock(&w->mu);
  /* A fire in progress finishes first, so that the caller never tears the
   * communicator down under a running abort; no fire starts after this,
   * since the watchdog checks `armed` under the lock. */
  while (w->firing) pthread_cond_wait(&w->cv, &w->mu);
  int fired = w->fired;
  w->armed = 0;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return fired;
}
